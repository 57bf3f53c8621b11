//! The settings of a guarded repository cannot change behind the immutability service's back
//! (issue 13 item 3): `repository.toml` is made immutable when the service guards the folder,
//! the service user can neither edit, replace nor remove it, and a repository whose settings
//! were changed anyway (by root, or before the service started) is refused by backups and by
//! the transport service. Root only.

use bulwark_testkit::guarded::*;

#[test]
fn repository_toml_of_a_guarded_repository_cannot_be_changed_by_the_service_user() {
    let test = "repository_toml_of_a_guarded_repository_cannot_be_changed_by_the_service_user";
    let Some(sys) = System::guarded(
        test,
        &["mkfs.ext4", "useradd", "chattr", "lsattr"],
        FsKind::Ext4,
    ) else {
        return;
    };
    let (rig, u, repo, repo_bin) = (&sys.rig, sys.user(), sys.repo.clone(), &sys.repo_bin);
    let settings = rig.repo.join("repository.toml");
    let svc = rig.start();
    let before = std::fs::read(&settings).unwrap();
    assert!(
        is_immutable(&settings),
        "the service did not lock repository.toml"
    );
    // Every way the service user could change the settings fails.
    for script in [
        format!("echo 'max_points_per_day = 100000' >> {repo}/repository.toml"),
        format!("sed -i 's/^immutd_socket.*//' {repo}/repository.toml"),
        format!("printf 'x' > {repo}/repository.toml"),
        format!("cp {repo}/repository.toml /tmp/x-$$ && mv -f /tmp/x-$$ {repo}/repository.toml"),
        format!("rm -f {repo}/repository.toml"),
        format!("chattr -i {repo}/repository.toml"),
        format!("mv {repo}/repository.toml {repo}/old.toml"),
    ] {
        let o = u.sh(&script);
        assert!(!o.status.success(), "the service user could run: {script}");
        assert_eq!(
            std::fs::read(&settings).unwrap(),
            before,
            "changed by: {script}"
        );
    }
    let o = run_as(u, repo_bin, &["audit", &repo]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.lines()
            .any(|l| l.contains("PASS") && l.contains("settings")),
        "{out}"
    );

    // Root (or an edit made before the service ever guarded the folder) drops the socket:
    // backups and the transport refuse the repository instead of writing unsealed points.
    let text = String::from_utf8(before.clone()).unwrap();
    let edited: String = text
        .lines()
        .filter(|l| !l.starts_with("immutd_socket"))
        .map(|l| format!("{l}\n"))
        .collect();
    sh(&format!("chattr -i {}", settings.display()));
    std::fs::write(&settings, edited).unwrap();
    let img = sys.image("d.img", &b"disk".repeat(10_000));
    let o = sys.backup(false, "vm-1", &img);
    assert!(
        !o.status.success(),
        "a backup ran on a guarded repository without its service"
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("names no immutability service"));
    assert!(!rig.repo.join("store").join("vm-1").exists());
    let o = run_as(u, repo_bin, &["serve", &repo, "--listen", "127.0.0.1:0"]);
    assert!(
        !o.status.success(),
        "the transport served an edited guarded repository"
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("names no immutability service"));
    let o = run_as(u, repo_bin, &["audit", &repo]);
    assert_ne!(o.status.code(), Some(0));
    std::fs::write(&settings, &before).unwrap();
    drop(svc);
}
