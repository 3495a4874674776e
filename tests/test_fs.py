"""Filesystem detection and the journal-mode rules of DESIGN section 4.

Most tests inject a mount table whose device numbers are those of the test's
own directory, so they run the same on any machine; two tests look at this
machine's real mounts, one of them on a tmpfs mounted for the test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from multinode import UnsafeFilesystemError
from multinode._fs import (
    LOCAL_FILESYSTEMS,
    Mount,
    choose_journal_mode,
    find_mount,
    is_local,
    lock_problem,
)

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads /proc/self/mountinfo"
)


def _escape(path: str) -> str:
    """A path as the kernel writes it into mountinfo."""
    for ch in "\\ \t\n":
        path = path.replace(ch, f"\\{ord(ch):03o}")
    return path


def _line(
    dev: int | str,
    mount_point: str,
    fstype: str,
    source: str,
    super_options: str = "rw",
    *,
    per_mount: str = "rw,relatime",
    optional: str = "shared:1",
    mount_id: int = 100,
) -> str:
    """One mountinfo line; ``dev`` is an ``st_dev`` or a "major:minor"."""
    if isinstance(dev, int):
        dev = f"{os.major(dev)}:{os.minor(dev)}"
    fields = [str(mount_id), "1", dev, "/", _escape(mount_point), per_mount]
    if optional:
        fields.append(optional)
    fields += ["-", fstype, _escape(source), super_options]
    return " ".join(fields)


def _dev(path: Path) -> int:
    return os.stat(path).st_dev


OTHER_DEV = "250:77"  # a device number no test directory has

# (fstype, source, super options, local?, text the lock problem names or None)
FILESYSTEMS = [
    ("ext4", "/dev/sda1", "rw,errors=remount-ro", True, None),
    ("xfs", "/dev/nvme0n1p3", "rw,attr2,inode64,logbufs=8,noquota", True, None),
    (
        "btrfs",
        "/dev/nvme0n1p2",
        "rw,ssd,space_cache=v2,subvolid=257,subvol=/@home",
        True,
        None,
    ),
    ("zfs", "rpool/ROOT/ubuntu_x1", "rw,xattr,posixacl", True, None),
    ("tmpfs", "tmpfs", "rw,size=8192k,mode=755", True, None),
    (
        "overlay",
        "overlay",
        "rw,lowerdir=/var/lib/docker/overlay2/l/A:/var/lib/docker/overlay2/l/B,"
        "upperdir=/var/lib/docker/overlay2/C/diff,workdir=/var/lib/docker/"
        "overlay2/C/work",
        True,
        None,
    ),
    (
        "nfs",
        "10.0.0.5:/export/data",
        "rw,vers=3,rsize=1048576,wsize=1048576,namlen=255,hard,proto=tcp,"
        "timeo=600,retrans=2,sec=sys,mountaddr=10.0.0.5,mountvers=3,"
        "mountport=20048,mountproto=udp,local_lock=none,addr=10.0.0.5",
        False,
        None,
    ),
    (
        "nfs",
        "10.0.0.5:/export/data",
        "rw,vers=3,rsize=1048576,wsize=1048576,namlen=255,hard,nolock,"
        "proto=tcp,timeo=600,retrans=2,sec=sys,mountaddr=10.0.0.5,mountvers=3,"
        "mountport=20048,mountproto=udp,local_lock=all,addr=10.0.0.5",
        False,
        "nolock",
    ),
    (
        "nfs4",
        "fileserver:/home",
        "rw,vers=4.2,rsize=1048576,wsize=1048576,namlen=255,hard,proto=tcp,"
        "timeo=600,retrans=2,sec=sys,clientaddr=10.0.0.9,local_lock=all,"
        "addr=10.0.0.5",
        False,
        "local_lock=all",
    ),
    (
        "nfs4",
        "fileserver:/home",
        "rw,vers=4.2,rsize=1048576,wsize=1048576,namlen=255,hard,proto=tcp,"
        "timeo=600,retrans=2,sec=sys,clientaddr=10.0.0.9,local_lock=none,"
        "addr=10.0.0.5",
        False,
        None,
    ),
    (
        "nfs4",
        "fileserver:/home",
        "rw,vers=4.1,hard,proto=tcp,sec=sys,local_lock=posix,addr=10.0.0.5",
        False,
        "local_lock=posix",
    ),
    (
        "cifs",
        "//winserver/share",
        "rw,vers=3.1.1,cache=strict,username=alice,uid=1000,noforceuid,"
        "addr=10.0.0.7,file_mode=0755,dir_mode=0755",
        False,
        None,
    ),
    ("smb3", "//winserver/share", "rw,vers=3.0,cache=strict", False, None),
    (
        "fuse.sshfs",
        "alice@build:/srv/data",
        "rw,user_id=1000,group_id=1000",
        False,
        None,
    ),
    ("fuseblk", "/dev/sdb1", "rw,user_id=0,group_id=0,allow_other", False, None),
    ("9p", "hostshare", "rw,sync,dirsync,access=client,trans=virtio", False, None),
    ("ceph", "10.0.0.1:6789:/", "rw,name=admin,acl", False, None),
    ("virtiofs", "myfs", "rw", False, None),
    ("weirdfs", "/dev/odd0", "rw", False, None),
]


@linux_only
@pytest.mark.parametrize(
    ("fstype", "source", "super_options", "local", "problem"),
    FILESYSTEMS,
    ids=[f"{f[0]}-{i}" for i, f in enumerate(FILESYSTEMS)],
)
def test_find_mount_by_type(
    tmp_path: Path,
    fstype: str,
    source: str,
    super_options: str,
    local: bool,
    problem: str | None,
) -> None:
    """Each type is found by device number and judged local/locked right."""
    table = "\n".join(
        [
            _line("254:0", "/", "ext4", "/dev/vda", mount_id=27),
            _line(_dev(tmp_path), str(tmp_path), fstype, source, super_options),
            # A decoy on the same path but another device: the device decides.
            _line(OTHER_DEV, str(tmp_path), "ext4", "/dev/decoy", mount_id=101),
        ]
    )
    mount = find_mount(str(tmp_path), mountinfo=table)

    assert mount is not None
    assert mount.fstype == fstype
    assert mount.mount_point == str(tmp_path)
    assert mount.source == source
    assert mount.options >= set(super_options.split(",")) | {"rw", "relatime"}
    assert is_local(mount) is local
    reason = lock_problem(mount)
    if problem is None:
        assert reason is None
    else:
        assert reason is not None and problem in reason
        assert str(tmp_path) in reason


def test_allow_list_has_the_local_types_and_none_of_the_remote() -> None:
    """The allow-list holds disks and memory, never network or FUSE types."""
    assert {"ext4", "xfs", "btrfs", "zfs", "tmpfs", "apfs", "overlay"} <= (
        LOCAL_FILESYSTEMS
    )
    remote = {"nfs", "nfs4", "cifs", "smb3", "9p", "ceph", "fuse", "fuseblk"}
    assert not remote & LOCAL_FILESYSTEMS
    assert not any(t.startswith("fuse") for t in LOCAL_FILESYSTEMS)


def test_unknown_mount_is_not_local_and_has_no_lock_problem() -> None:
    """None (could not tell) is treated as not local; locks are not judged."""
    assert is_local(None) is False
    assert lock_problem(None) is None


def test_nolock_only_matters_on_nfs() -> None:
    """A 'nolock' option on a non-NFS type is not an NFS lock problem."""
    mount = Mount("cifs", "/mnt/x", "//h/s", frozenset({"rw", "nolock"}))
    assert lock_problem(mount) is None


def test_local_lock_flock_keeps_posix_locks() -> None:
    """local_lock=flock leaves fcntl locks (SQLite's) going to the server."""
    mount = Mount("nfs4", "/mnt/x", "h:/e", frozenset({"rw", "local_lock=flock"}))
    assert lock_problem(mount) is None


@linux_only
def test_bind_mounts_pick_the_longest_prefix_of_the_path(tmp_path: Path) -> None:
    """Lines sharing the device: the one the path runs through is chosen."""
    inner = tmp_path / "data" / "inner"
    inner.mkdir(parents=True)
    dev = _dev(inner)
    table = "\n".join(
        [
            _line(dev, "/", "ext4", "/dev/vda", "rw", mount_id=1),
            _line(
                dev,
                str(tmp_path / "data"),
                "ext4",
                "/dev/vda",
                "rw",
                mount_id=2,
                per_mount="ro,relatime",
            ),
            # Same device, a string prefix of the path but not a directory of it.
            _line(dev, str(tmp_path / "dat"), "ext4", "/dev/vda", mount_id=3),
            _line(
                dev,
                "/srv/elsewhere/deeper/than/the/rest",
                "ext4",
                "/dev/vda",
                mount_id=4,
            ),
        ]
    )
    mount = find_mount(str(inner), mountinfo=table)
    assert mount is not None
    assert mount.mount_point == str(tmp_path / "data")
    assert "ro" in mount.options


@linux_only
def test_same_device_elsewhere_still_gives_the_type(tmp_path: Path) -> None:
    """A device listed only at unrelated mount points still names the type."""
    table = _line(_dev(tmp_path), "/srv/bound", "xfs", "/dev/sdc1", "rw")
    mount = find_mount(str(tmp_path), mountinfo=table)
    assert mount is not None and mount.fstype == "xfs"


@linux_only
def test_escaped_spaces_in_mount_points(tmp_path: Path) -> None:
    """\\040 in mountinfo is a space; the decoded point matches the path."""
    spaced = tmp_path / "my store dir"
    store_dir = spaced / "sub"
    store_dir.mkdir(parents=True)
    (tmp_path / "my store dirx").mkdir()
    dev = _dev(store_dir)
    table = "\n".join(
        [
            _line(dev, str(tmp_path), "ext4", "/dev/vda", mount_id=1),
            _line(
                dev,
                str(spaced),
                "nfs4",
                "srv:/with space",
                "rw,local_lock=none",
                mount_id=2,
            ),
            _line(dev, str(tmp_path / "my store dirx"), "ext4", "/dev/x", mount_id=3),
        ]
    )
    assert "\\040" in table

    mount = find_mount(str(store_dir), mountinfo=table)
    assert mount is not None
    assert mount.mount_point == str(spaced)
    assert mount.source == "srv:/with space"
    assert mount.fstype == "nfs4"


@linux_only
def test_no_line_for_the_device_means_unknown(tmp_path: Path) -> None:
    """If no line has the directory's device, find_mount cannot tell: None."""
    table = "\n".join(
        [
            _line(OTHER_DEV, "/", "ext4", "/dev/vda"),
            _line(OTHER_DEV, str(tmp_path), "nfs4", "srv:/e", mount_id=2),
        ]
    )
    assert find_mount(str(tmp_path), mountinfo=table) is None
    assert find_mount(str(tmp_path), mountinfo="") is None


@linux_only
def test_btrfs_subvolume_found_by_path(tmp_path: Path) -> None:
    """Btrfs subvolumes have unlisted devices; the path finds their mount."""
    table = "\n".join(
        [
            _line(OTHER_DEV, "/", "ext4", "/dev/vda", mount_id=1),
            _line(
                "0:45", str(tmp_path), "btrfs", "/dev/sdb", "rw,subvol=/@", mount_id=2
            ),
        ]
    )
    mount = find_mount(str(tmp_path / "sub"), mountinfo=table)
    assert mount is not None and mount.fstype == "btrfs"


@linux_only
def test_malformed_lines_are_skipped(tmp_path: Path) -> None:
    """Garbage lines in the table do not stop the right one being found."""
    table = "\n".join(
        [
            "",
            "garbage",
            "1 2 x:y / / rw - ext4 /dev/a rw",
            "1 2 3:4 / / rw no-dash-here ext4",
            _line(_dev(tmp_path), str(tmp_path), "xfs", "/dev/sdc1"),
        ]
    )
    mount = find_mount(str(tmp_path), mountinfo=table)
    assert mount is not None and mount.fstype == "xfs"


@linux_only
def test_line_without_optional_fields(tmp_path: Path) -> None:
    """A line with no optional fields before the '-' still parses."""
    table = _line(_dev(tmp_path), str(tmp_path), "zfs", "tank/home", optional="")
    mount = find_mount(str(tmp_path), mountinfo=table)
    assert mount is not None and mount.fstype == "zfs"


@linux_only
def test_path_not_made_yet_uses_its_nearest_ancestor(tmp_path: Path) -> None:
    """A store directory still to be created is judged by its parent's mount."""
    table = _line(_dev(tmp_path), str(tmp_path), "tmpfs", "tmpfs")
    mount = find_mount(str(tmp_path / "not" / "yet"), mountinfo=table)
    assert mount is not None and mount.fstype == "tmpfs"


@linux_only
def test_symlinked_directory_is_resolved(tmp_path: Path) -> None:
    """A symlink to a directory is judged by where it leads."""
    target = tmp_path / "target"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    dev = _dev(target)
    table = "\n".join(
        [
            _line(dev, str(tmp_path), "ext4", "/dev/vda", mount_id=1),
            _line(dev, str(target), "xfs", "/dev/sdz", mount_id=2),
        ]
    )
    mount = find_mount(str(link), mountinfo=table)
    assert mount is not None and mount.fstype == "xfs"


def test_mount_str_names_type_point_and_source() -> None:
    """str(Mount) is what messages and `multinode info` show."""
    mount = Mount("ext4", "/", "/dev/vda", frozenset({"rw"}))
    assert str(mount) == "ext4 mounted at / from /dev/vda"


# --- this machine's real mounts ---------------------------------------------


@linux_only
def test_real_tmp() -> None:
    """/tmp is found in the real mount table, with the type findmnt reports."""
    tmp = os.path.realpath("/tmp")
    mount = find_mount(tmp)
    assert mount is not None
    assert tmp == mount.mount_point or tmp.startswith(
        mount.mount_point.rstrip("/") + "/"
    )
    findmnt = shutil.which("findmnt")
    if findmnt is not None:
        out = subprocess.run(
            [findmnt, "-n", "-o", "FSTYPE", "-T", tmp],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        assert mount.fstype == out.stdout.strip()


@pytest.mark.skipif(sys.platform != "darwin", reason="statfs path is macOS only")
def test_real_tmp_macos() -> None:
    """On macOS statfs names the type of the temporary directory."""
    mount = find_mount(os.path.realpath("/tmp"))
    assert mount is not None and mount.fstype and mount.mount_point


@pytest.fixture
def tmpfs_dir(tmp_path: Path) -> Iterator[Path]:
    """A small tmpfs mounted for the test, always unmounted afterwards."""
    point = tmp_path / "mnt"
    point.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(point)],
            capture_output=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"cannot mount a tmpfs here: {e}")
    try:
        yield point
    finally:
        subprocess.run(["umount", str(point)], timeout=30, check=False)


@linux_only
def test_real_tmpfs(tmpfs_dir: Path) -> None:
    """A tmpfs mounted for the test is found as tmpfs at its mount point."""
    store_dir = tmpfs_dir / "stores"
    store_dir.mkdir()
    mount = find_mount(str(store_dir))
    assert mount is not None
    assert mount.fstype == "tmpfs"
    assert mount.mount_point == os.path.realpath(tmpfs_dir)
    assert "size=8192k" in mount.options
    assert is_local(mount)
    assert choose_journal_mode("auto", mount, None, path=str(store_dir / "s"))[0] == (
        "wal"
    )


# --- choose_journal_mode ----------------------------------------------------

EXT4 = Mount("ext4", "/", "/dev/vda", frozenset({"rw"}))
TMPFS = Mount("tmpfs", "/dev/shm", "tmpfs", frozenset({"rw"}))
NFS4 = Mount("nfs4", "/shared", "srv:/export", frozenset({"rw", "local_lock=none"}))
NFS3_NOLOCK = Mount(
    "nfs", "/shared", "srv:/export", frozenset({"rw", "nolock", "local_lock=all"})
)
NFS4_LOCAL_ALL = Mount("nfs4", "/shared", "srv:/e", frozenset({"rw", "local_lock=all"}))
NFS4_FLOCK = Mount("nfs4", "/shared", "srv:/e", frozenset({"rw", "local_lock=flock"}))
CIFS = Mount("cifs", "/mnt/win", "//w/s", frozenset({"rw"}))
SSHFS = Mount("fuse.sshfs", "/mnt/ssh", "u@h:/d", frozenset({"rw"}))
UNKNOWN = Mount("weirdfs", "/mnt/odd", "/dev/odd0", frozenset({"rw"}))

# (requested, mount, existing, expected mode, words the reason must contain)
CHOICES = [
    # New store under auto: WAL only on an allow-listed local filesystem.
    ("auto", EXT4, None, "wal", ["new store", "ext4", "WAL"]),
    ("auto", TMPFS, None, "wal", ["tmpfs"]),
    ("auto", NFS4, None, "rollback", ["nfs4", "/shared", "rollback"]),
    ("auto", NFS4_FLOCK, None, "rollback", ["nfs4"]),
    ("auto", CIFS, None, "rollback", ["cifs"]),
    ("auto", SSHFS, None, "rollback", ["fuse.sshfs"]),
    ("auto", UNKNOWN, None, "rollback", ["weirdfs"]),
    ("auto", None, None, "rollback", ["could not identify"]),
    # An existing store keeps its mode under auto.
    ("auto", EXT4, "rollback", "rollback", ["already", "kept"]),
    ("auto", TMPFS, "rollback", "rollback", ["kept"]),
    ("auto", EXT4, "wal", "wal", ["kept"]),
    ("auto", NFS4, "rollback", "rollback", ["kept"]),
    ("auto", None, "rollback", "rollback", ["kept"]),
    # Explicit modes win, saying when they switch an existing store.
    ("wal", EXT4, None, "wal", ["requested"]),
    ("wal", NFS4, None, "wal", ["requested", "this host"]),
    ("wal", NFS4, "wal", "wal", ["requested", "this host"]),
    ("wal", None, "wal", "wal", ["requested"]),
    ("wal", NFS3_NOLOCK, None, "wal", ["requested"]),
    ("wal", NFS4_LOCAL_ALL, "wal", "wal", ["requested"]),
    ("wal", EXT4, "rollback", "wal", ["switched", "requested"]),
    ("wal", EXT4, "wal", "wal", ["requested"]),
    ("rollback", EXT4, None, "rollback", ["requested"]),
    ("rollback", EXT4, "wal", "rollback", ["switched", "requested"]),
    ("rollback", EXT4, "rollback", "rollback", ["requested"]),
    ("rollback", NFS4, None, "rollback", ["requested"]),
    ("rollback", NFS4, "rollback", "rollback", ["requested"]),
    ("rollback", CIFS, None, "rollback", ["requested"]),
]


@pytest.mark.parametrize(
    ("requested", "mount", "existing", "mode", "words"),
    CHOICES,
    ids=[f"{c[0]}-{c[1].fstype if c[1] else 'none'}-{c[2]}" for c in CHOICES],
)
def test_choose_journal_mode(
    requested: str,
    mount: Mount | None,
    existing: str | None,
    mode: str,
    words: list[str],
) -> None:
    """Each rule of DESIGN section 4 gives its mode and says why."""
    got, reason = choose_journal_mode(requested, mount, existing, path="/x/s.db")
    assert got == mode
    for word in words:
        assert word in reason
    assert "\n" not in reason


# (requested, mount, existing, words the refusal must contain)
REFUSALS = [
    # A WAL store seen from a filesystem not known to be local.
    ("auto", NFS4, "wal", ["nfs4", "/shared", "shared memory", "one host"]),
    ("auto", CIFS, "wal", ["cifs", "/mnt/win"]),
    ("auto", SSHFS, "wal", ["fuse.sshfs", "/mnt/ssh"]),
    ("auto", UNKNOWN, "wal", ["weirdfs"]),
    ("auto", None, "wal", ["could not identify"]),
    ("rollback", NFS4, "wal", ["nfs4", "/shared"]),
    # NFS without working locks, whatever the store.
    ("auto", NFS3_NOLOCK, None, ["nolock"]),
    ("auto", NFS3_NOLOCK, "rollback", ["nolock"]),
    ("rollback", NFS3_NOLOCK, None, ["nolock"]),
    ("auto", NFS4_LOCAL_ALL, None, ["local_lock=all"]),
    ("auto", NFS4_LOCAL_ALL, "wal", ["local_lock=all"]),
    ("rollback", NFS4_LOCAL_ALL, "rollback", ["local_lock=all"]),
]


@pytest.mark.parametrize(
    ("requested", "mount", "existing", "words"),
    REFUSALS,
    ids=[f"{c[0]}-{c[1].fstype if c[1] else 'none'}-{c[2]}" for c in REFUSALS],
)
def test_choose_journal_mode_refuses(
    requested: str, mount: Mount | None, existing: str | None, words: list[str]
) -> None:
    """Unsafe combinations raise, naming the file, the cause and the fix."""
    with pytest.raises(UnsafeFilesystemError) as info:
        choose_journal_mode(requested, mount, existing, path="/shared/app/s.db")
    message = str(info.value)
    assert "/shared/app/s.db" in message
    assert 'journal_mode="wal"' in message
    for word in words:
        assert word in message
    if existing == "wal" and lock_problem(mount) is None:
        assert 'journal_mode="rollback"' in message
        assert "host that owns the disk" in message


@pytest.mark.parametrize(
    ("requested", "existing"),
    [("WAL", None), ("delete", None), ("", None), ("auto", "delete")],
)
def test_choose_journal_mode_rejects_unknown_modes(
    requested: str, existing: str | None
) -> None:
    """A mode outside the documented ones is a ValueError, not a guess."""
    with pytest.raises(ValueError):
        choose_journal_mode(requested, EXT4, existing, path="/x/s.db")
