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

/// Both tests' start: the two programs, a service user, and a new repository `repo` in a
/// scratch folder others may enter (the service user must reach the repository).
struct Rig {
    repo_bin: &'static str,
    client: String,
    user: TestUser,
    d: tempfile::TempDir,
    dir: std::path::PathBuf,
}

impl Rig {
    /// `bulwark backup` of a new 1 MiB image (random from `seed`) as job `web`.
    fn backup(&self, seed: u64) -> Output {
        let img = self.d.path().join("disk.img");
        std::fs::write(&img, bulwark_testkit::Rng::new(seed).bytes(1 << 20)).unwrap();
        let (repo, img) = (self.dir.to_str().unwrap(), img.to_str().unwrap());
        run(
            &self.client,
            &["backup", "--repo", repo, "--job", "web", img],
        )
    }

    /// Gives the repository (recursively) to the service user and group `gid`.
    fn chown_to_user(&self, gid: u32) {
        let o = Command::new("chown")
            .args(["-R", &format!("{}:{gid}", self.user.uid)])
            .arg(&self.dir)
            .output()
            .unwrap();
        assert!(o.status.success());
    }
}

fn rig() -> Rig {
    let repo_bin = env!("CARGO_BIN_EXE_bulwark-repo");
    let client = bulwark_testkit::serve::bin_client();
    let user = TestUser::create();
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        d.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let dir = d.path().join("repo");
    assert!(run(
        repo_bin,
        &["init", dir.to_str().unwrap(), "--immutable-days", "7"]
    )
    .status
    .success());
    Rig {
        repo_bin,
        client: client.to_str().unwrap().to_string(),
        user,
        d,
        dir,
    }
}

#[test]
fn root_leaves_no_root_owned_file_in_a_service_users_repository() {
    need_root!("root_leaves_no_root_owned_file_in_a_service_users_repository");
    let r = rig();
    let (repo_bin, user, dir) = (r.repo_bin, &r.user, &r.dir);
    let ds = dir.to_str().unwrap();
    assert!(r.backup(3).status.success());
    r.chown_to_user(user.gid);

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

    copy_into_it_as_root_is_refused(&r);
}

/// `bulwark copy` by root from a repository of root's into `r`'s repository: refused (exit 2,
/// "belongs to its service user"), nothing written there.
fn copy_into_it_as_root_is_refused(r: &Rig) {
    let img = r.d.path().join("src.img");
    std::fs::write(&img, bulwark_testkit::Rng::new(5).bytes(1 << 20)).unwrap();
    let src = r.d.path().join("src");
    let ss = src.to_str().unwrap();
    assert!(run(r.repo_bin, &["init", ss, "--immutable-days", "7"])
        .status
        .success());
    let backup = ["backup", "--repo", ss, "--job", "db", img.to_str().unwrap()];
    assert!(run(&r.client, &backup).status.success());
    let o = run(
        &r.client,
        &["copy", "--from", ss, "--to", r.dir.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(bulwark_testkit::text(&o).contains("belongs to its service user"));
    assert_eq!(
        std::fs::read_dir(r.dir.join("incoming")).unwrap().count(),
        0
    );
    assert!(!r.dir.join("jobs/db").exists() && !r.dir.join("locks/db.lock").exists());
}

/// A repository of a user but group root: root's `bulwark-repo` and `bulwark` refuse to
/// continue (with group root every file they wrote would keep root's group) and change
/// nothing; both programs say it the same way, from the one owner rule in cli-common.
#[test]
fn a_repository_of_a_user_with_group_root_is_refused_by_both_programs() {
    need_root!("a_repository_of_a_user_with_group_root_is_refused_by_both_programs");
    let r = rig();
    let (repo_bin, dir) = (r.repo_bin, &r.dir);
    let ds = dir.to_str().unwrap();
    r.chown_to_user(0);
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
    let o = r.backup(4);
    assert_eq!(o.status.code(), Some(2));
    assert!(bulwark_testkit::text(&o).contains("but group root"));
    assert_eq!(tree(), before, "the backup wrote nothing either");
    // A copy by root is refused as for any repository of a service user.
    copy_into_it_as_root_is_refused(&r);
}
