//! The power-loss model itself, driven through the I/O wrappers with no log on top: what
//! `pull_plug` keeps (fsynced file content, fsynced directory listings, a torn last write) and what
//! it undoes (unsynced writes, creations, renames and deletions), and that `pull_plug_with` keeps
//! any chosen subset of the unsynced name changes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::{self, OpenOptions};
use std::path::Path;

use crate::fault::{LastWrite, Names, Plan};
use crate::io::{create, remove_file, rename, sync_data, sync_dir, write_all_at};

fn open_rw(path: &Path) -> fs::File {
    create(path, OpenOptions::new().read(true).write(true).create(true)).unwrap()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Unsynced writes are lost, fsynced ones kept; a file created and fsynced but whose directory was
/// not fsynced is gone; a rename and a deletion without a directory fsync are undone (the renamed
/// file's durable data back under its old name). Broken by making the model ignore `Sync` (no
/// durable image taken): `a` read back as its content at arming and the test failed.
#[test]
fn pull_plug_keeps_only_what_fsyncs_covered() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("a"), b"armed").unwrap();
    fs::write(d.join("gone"), b"deleted later").unwrap();
    let armed = Plan::new(d).power_loss().arm();
    let a = open_rw(&d.join("a"));
    write_all_at(&a, &d.join("a"), &[b"synced"], 0).unwrap();
    sync_data(&a, &d.join("a")).unwrap();
    write_all_at(&a, &d.join("a"), &[b"-lost"], 6).unwrap();
    let b = open_rw(&d.join("b"));
    write_all_at(&b, &d.join("b"), &[b"new file"], 0).unwrap();
    sync_data(&b, &d.join("b")).unwrap();
    rename(&d.join("a"), &d.join("a2")).unwrap();
    fs::remove_file(d.join("gone")).unwrap();
    let cut = armed.pull_plug(LastWrite::Lose).unwrap();
    assert_eq!(names(d), ["a", "gone"], "{cut:?}");
    assert_eq!(fs::read(d.join("a")).unwrap(), b"synced");
    assert_eq!(fs::read(d.join("gone")).unwrap(), b"deleted later");
}

/// A directory fsync makes its listing durable: a new file's name survives with only its fsynced
/// bytes (none: empty), a rename's new name survives carrying the file's durable data; and the last
/// unsynced write lands torn after the chosen byte, with zeros where lost writes before it were.
/// Broken like the test above (`Sync` ignored): `a2` read back as `armed` plus the tear and the
/// test failed.
#[test]
fn a_directory_fsync_makes_names_durable_and_the_last_write_tears() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("a"), b"armed").unwrap();
    let armed = Plan::new(d).power_loss().arm();
    let a = open_rw(&d.join("a"));
    write_all_at(&a, &d.join("a"), &[b"AAAAA", b"BBBBB"], 0).unwrap();
    sync_data(&a, &d.join("a")).unwrap();
    let n = open_rw(&d.join("n"));
    write_all_at(&n, &d.join("n"), &[b"never synced"], 0).unwrap();
    rename(&d.join("a"), &d.join("a2")).unwrap();
    sync_dir(d).unwrap();
    write_all_at(&a, &d.join("a2"), &[b"lost"], 10).unwrap();
    write_all_at(&a, &d.join("a2"), &[b"torn", b"-write"], 14).unwrap();
    let cut = armed.pull_plug(LastWrite::Keep(6)).unwrap();
    assert_eq!(names(d), ["a2", "n"], "{cut:?}");
    assert_eq!(fs::read(d.join("n")).unwrap(), b"");
    assert_eq!(fs::read(d.join("a2")).unwrap(), b"AAAAABBBBB\0\0\0\0torn-w");
    let torn = cut.torn.unwrap();
    assert_eq!((torn.pos, torn.kept, torn.len), (14, 6, 10));
}

/// `pull_plug_into` writes the same durable state as `pull_plug` into a new directory and leaves
/// the scope alone (a broker under test cannot stop its threads, so the image goes elsewhere): a
/// subdirectory whose parent was fsynced after its creation survives with its fsynced file; one the
/// parent's fsync never covered is gone. Broken by making the model ignore `SyncDir` (no durable
/// listing taken): the image lost `sub` and the test failed.
#[test]
fn pull_plug_into_writes_the_durable_state_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let scope = dir.path().join("scope");
    fs::create_dir(&scope).unwrap();
    let armed = Plan::new(&scope).power_loss().arm();
    fs::create_dir(scope.join("sub")).unwrap();
    sync_dir(&scope).unwrap();
    let f = open_rw(&scope.join("sub/f"));
    write_all_at(&f, &scope.join("sub/f"), &[b"kept"], 0).unwrap();
    sync_data(&f, &scope.join("sub/f")).unwrap();
    sync_dir(&scope.join("sub")).unwrap();
    write_all_at(&f, &scope.join("sub/f"), &[b"-lost"], 4).unwrap();
    fs::create_dir(scope.join("unsynced")).unwrap();
    let image = dir.path().join("image");
    let cut = armed.pull_plug_into(LastWrite::Lose, &image).unwrap();
    assert_eq!(names(&image), ["sub"], "{cut:?}");
    assert_eq!(fs::read(image.join("sub/f")).unwrap(), b"kept");
    assert_eq!(
        names(&scope),
        ["sub", "unsynced"],
        "the scope is left alone"
    );
    assert_eq!(fs::read(scope.join("sub/f")).unwrap(), b"kept-lost");
}

/// A file system may write a directory's unsynced changes in any order: of a creation (fsynced
/// data, unsynced name), a later rename and a later removal, each subset can be what the disk
/// holds, applied over the fsynced listing. A later rename survives while the earlier creation is
/// lost (the renamed file under its new name, with its durable data); a kept removal stays done, a
/// lost one is undone; a directory fsync leaves nothing to choose. Broken by making the model
/// ignore the kept changes (every directory as its last fsync left it): the rename kept alone
/// came back undone and the test failed; and by not clearing the changes a directory fsync covers:
/// `unsynced_names` was 2, not 0, after the fsync and the test failed.
#[test]
fn unsynced_name_changes_survive_in_any_subset() {
    let cases: [(Names, &[&str]); 6] = [
        (Names::Lose, &["a", "old"]),
        (Names::Keep(vec![1]), &["a2", "old"]),
        (Names::Keep(vec![0]), &["a", "n", "old"]),
        (Names::Keep(vec![2]), &["a"]),
        (Names::all_but(3, 0), &["a2"]),
        (Names::all(3), &["a2", "n"]),
    ];
    for (keep, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join("a"), b"armed").unwrap();
        fs::write(d.join("old"), b"removed later").unwrap();
        let armed = Plan::new(d).power_loss().arm();
        let n = open_rw(&d.join("n"));
        write_all_at(&n, &d.join("n"), &[b"new"], 0).unwrap();
        sync_data(&n, &d.join("n")).unwrap();
        rename(&d.join("a"), &d.join("a2")).unwrap();
        remove_file(&d.join("old")).unwrap();
        assert_eq!(armed.unsynced_names(), 3);
        let cut = armed.pull_plug_with(LastWrite::Lose, &keep).unwrap();
        assert_eq!(names(d), want, "{keep:?}: {cut:?}");
        for (name, body) in [("a", &b"armed"[..]), ("a2", b"armed"), ("n", b"new")] {
            if want.contains(&name) {
                assert_eq!(fs::read(d.join(name)).unwrap(), body, "{keep:?}: {name}");
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let armed = Plan::new(d).power_loss().arm();
    open_rw(&d.join("n"));
    rename(&d.join("n"), &d.join("n2")).unwrap();
    sync_dir(d).unwrap();
    assert_eq!(armed.unsynced_names(), 0);
    armed.pull_plug(LastWrite::Lose).unwrap();
    assert_eq!(names(d), ["n2"]);
}
