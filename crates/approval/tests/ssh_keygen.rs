//! Real `ssh-keygen` keys and signatures against the k-of-n check: what an approver's
//! `ssh-keygen -Y sign -n bulwark-approval` makes is accepted, everything else refused.

use std::path::{Path, PathBuf};
use std::process::Command;

use bulwark_approval::{ApprovalError, Approvers, NAMESPACE};

struct Dir(PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn have_ssh_keygen() -> bool {
    Command::new("ssh-keygen")
        .arg("-Y")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stderr).contains("-Y"))
        .unwrap_or(false)
}

fn keygen(dir: &Path, name: &str, kind: &str) -> (PathBuf, String) {
    let key = dir.join(name);
    let o = Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-N", "", "-C", name, "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    (key, public.trim().to_string())
}

fn sign(key: &Path, namespace: &str, file: &Path) -> Vec<u8> {
    let sig = PathBuf::from(format!("{}.sig", file.display()));
    let _ = std::fs::remove_file(&sig);
    let o = Command::new("ssh-keygen")
        .args(["-q", "-Y", "sign", "-f"])
        .arg(key)
        .args(["-n", namespace])
        .arg(file)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::read(&sig).unwrap()
}

#[test]
fn two_of_three_ssh_keygen_signatures_approve_exactly_the_signed_text() {
    if !have_ssh_keygen() {
        println!("SKIP two_of_three_ssh_keygen_signatures_approve_exactly_the_signed_text: ssh-keygen with -Y is missing (apt-get install openssh-client)");
        return;
    }
    let dir = Dir(std::env::temp_dir().join(format!("bw-approval-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let (ka, pa) = keygen(&dir.0, "alice", "ed25519");
    let (kb, pb) = keygen(&dir.0, "bob", "ed25519");
    let (_kc, pc) = keygen(&dir.0, "carol", "ed25519");
    let (km, _) = keygen(&dir.0, "mallory", "ed25519");
    let approvers = Approvers::parse(&[pa.clone(), pb.clone(), pc.clone()], 2).unwrap();
    assert_eq!(approvers.list.len(), 3);

    let stmt = dir.0.join("statement");
    std::fs::write(&stmt, b"bulwark-approval-statement 1\nthe text\nend\n").unwrap();
    let text = std::fs::read(&stmt).unwrap();
    let a = sign(&ka, NAMESPACE, &stmt);
    let b = sign(&kb, NAMESPACE, &stmt);
    let m = sign(&km, NAMESPACE, &stmt);

    // k signatures from different approvers: accepted, naming them.
    let names = approvers.check(&text, &[&a, &b]).unwrap();
    assert_eq!(names, vec!["alice".to_string(), "bob".to_string()]);
    // k-1, or one approver twice.
    assert!(matches!(
        approvers.check(&text, &[&a]),
        Err(ApprovalError::TooFew { valid: 1, .. })
    ));
    assert!(matches!(
        approvers.check(&text, &[&a, &a]),
        Err(ApprovalError::TooFew { valid: 1, .. })
    ));
    // A key not in the list.
    let e = approvers.check(&text, &[&a, &b, &m]).unwrap_err();
    assert!(
        e.to_string().contains("not among the configured approvers"),
        "{e}"
    );
    // Another text.
    let mut other = text.clone();
    other[30] ^= 1;
    let e = approvers.check(&other, &[&a, &b]).unwrap_err();
    assert!(e.to_string().contains("does not match"), "{e}");
    // Another namespace.
    let g = sign(&kb, "git", &stmt);
    let e = approvers.check(&text, &[&a, &g]).unwrap_err();
    assert!(e.to_string().contains("namespace"), "{e}");
    // Not a signature, or too large.
    assert!(approvers.check(&text, &[&a, b"garbage"]).is_err());
    let big = vec![b'A'; 5000];
    assert!(approvers.check(&text, &[&a, &big]).is_err());

    // Configuration rules: k >= 2 and <= n, Ed25519 only, unique names and keys.
    assert!(Approvers::parse(&[pa.clone(), pb.clone()], 1).is_err());
    assert!(Approvers::parse(&[pa.clone(), pb.clone()], 3).is_err());
    assert!(Approvers::parse(&[pa.clone(), pa.clone()], 2).is_err());
    let renamed = pa.replace(" alice", " alice2");
    assert!(Approvers::parse(&[pa.clone(), renamed], 2).is_err());
    let (_kr, pr) = keygen(&dir.0, "rsa-user", "rsa");
    assert!(Approvers::parse(&[pa.clone(), pr], 2).is_err());
    let nameless = pa.trim_end_matches(" alice").to_string();
    assert!(Approvers::parse(&[nameless, pb.clone()], 2).is_err());
    assert!(Approvers::parse(&["ssh-ed25519 AAAA-not-base64 x".into(), pb], 2).is_err());
}
