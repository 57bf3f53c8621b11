//! Root working on a repository that belongs to its service user: `bulwark-repo` continues
//! as that user, so nothing root-owned is left for the service to trip over, and `bulwark
//! copy` into it as root is refused before anything is written.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output};

use bulwark_testkit::{need_root, TestUser};

fn run(bin: &str, args: &[&str]) -> Output {
    let o = Command::new(bin).args(args).output().unwrap();
    eprintln!("$ {bin} {}\n{}", args.join(" "), bulwark_testkit::text(&o));
    o
}

fn owner(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .uid()
}

#[test]
fn root_leaves_no_root_owned_file_in_a_service_users_repository() {
    need_root!("root_leaves_no_root_owned_file_in_a_service_users_repository");
    let repo_bin = env!("CARGO_BIN_EXE_bulwark-repo");
    let client = bulwark_testkit::serve::bin_client();
    let client = client.to_str().unwrap();
    let user = TestUser::create();
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        d.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let dir = d.path().join("repo");
    let ds = dir.to_str().unwrap();
    assert!(run(repo_bin, &["init", ds, "--immutable-days", "7"])
        .status
        .success());
    let img = d.path().join("disk.img");
    std::fs::write(&img, bulwark_testkit::Rng::new(3).bytes(1 << 20)).unwrap();
    assert!(run(
        client,
        &[
            "backup",
            "--repo",
            ds,
            "--job",
            "web",
            img.to_str().unwrap()
        ]
    )
    .status
    .success());
    let o = Command::new("chown")
        .args(["-R", &format!("{}:{}", user.uid, user.gid), ds])
        .output()
        .unwrap();
    assert!(o.status.success());

    assert!(run(repo_bin, &["verify", ds]).status.success());
    assert_eq!(owner(&dir.join("health/verified.json")), user.uid);
    assert!(run(
        repo_bin,
        &["policy", ds, "--job", "web", "--keep-points", "3"]
    )
    .status
    .success());
    assert_eq!(owner(&dir.join("policies/web.toml")), user.uid);
    let o = run(repo_bin, &["--json", "enroll", ds, "--client", "c1"]);
    assert!(o.status.success());
    for e in std::fs::read_dir(dir.join("net/tokens")).unwrap() {
        assert_eq!(owner(&e.unwrap().path()), user.uid, "a root-owned token");
    }
    // The service user can change what root set.
    let o = user
        .cmd(repo_bin)
        .args(["policy", ds, "--job", "web", "--keep-points", "4"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", bulwark_testkit::text(&o));

    // bulwark copy into it as root: refused, nothing written.
    let src = d.path().join("src");
    let ss = src.to_str().unwrap();
    assert!(run(repo_bin, &["init", ss, "--immutable-days", "7"])
        .status
        .success());
    assert!(run(
        client,
        &["backup", "--repo", ss, "--job", "db", img.to_str().unwrap()]
    )
    .status
    .success());
    let o = run(client, &["copy", "--from", ss, "--to", ds]);
    assert_eq!(o.status.code(), Some(2));
    assert!(bulwark_testkit::text(&o).contains("belongs to its service user"));
    assert_eq!(std::fs::read_dir(dir.join("incoming")).unwrap().count(), 0);
    assert!(!dir.join("jobs/db").exists() && !dir.join("locks/db.lock").exists());
}

/// A repository of a user but group root: root's `bulwark-repo` and `bulwark` refuse to
/// continue (with group root every file they wrote would keep root's group) and change
/// nothing; both programs say it the same way, from the one owner rule in cli-common.
#[test]
fn a_repository_of_a_user_with_group_root_is_refused_by_both_programs() {
    need_root!("a_repository_of_a_user_with_group_root_is_refused_by_both_programs");
    let repo_bin = env!("CARGO_BIN_EXE_bulwark-repo");
    let client = bulwark_testkit::serve::bin_client();
    let client = client.to_str().unwrap();
    let user = TestUser::create();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("repo");
    let ds = dir.to_str().unwrap();
    assert!(run(repo_bin, &["init", ds, "--immutable-days", "7"])
        .status
        .success());
    let o = Command::new("chown")
        .args(["-R", &format!("{}:0", user.uid), ds])
        .output()
        .unwrap();
    assert!(o.status.success());
    let tree = || {
        let o = Command::new("find")
            .arg(ds)
            .arg("-printf")
            .arg("%p %s %T@\n")
            .output()
            .unwrap();
        String::from_utf8(o.stdout).unwrap()
    };
    let before = tree();
    let o = run(
        repo_bin,
        &["policy", ds, "--job", "web", "--keep-days", "9"],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        bulwark_testkit::text(&o).contains("but group root"),
        "the refusal names the cause"
    );
    assert_eq!(tree(), before, "nothing was changed");
    let img = d.path().join("disk.img");
    std::fs::write(&img, bulwark_testkit::Rng::new(4).bytes(1 << 20)).unwrap();
    let o = run(
        client,
        &[
            "backup",
            "--repo",
            ds,
            "--job",
            "web",
            img.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(bulwark_testkit::text(&o).contains("but group root"));
    assert_eq!(tree(), before, "the backup wrote nothing either");
}
