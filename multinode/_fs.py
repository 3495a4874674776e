"""Which filesystem holds a store, and which journal mode is safe there.

SQLite's WAL mode keeps its index in shared memory: each process maps the
store's ``-shm`` file and coordinates through it. That only works when every
process runs on one host, because a network filesystem does not keep two
hosts' mappings of one file coherent. A rollback journal needs nothing but
POSIX advisory locks, which NFS forwards to the server. So multinode looks at
the filesystem of the store's directory before it opens the store:

* Linux: the line of ``/proc/self/mountinfo`` whose device number is the
  directory's ``st_dev``. The device number, not the path, decides, because a
  path can lead through bind mounts and symlinks to a mount elsewhere.
* macOS: ``statfs(2)``, which names the filesystem type directly.

Then `choose_journal_mode` applies the rules of DESIGN section 4: WAL only on
an allow-list of local filesystems, an existing store's mode kept, a WAL store
seen over a network refused, an NFS mount without working locks refused.
Anything this module cannot identify counts as not local, since guessing
"local" wrongly corrupts stores while guessing "remote" only costs speed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import sys
from dataclasses import dataclass

from multinode.errors import UnsafeFilesystemError

__all__ = [
    "LOCAL_FILESYSTEMS",
    "Mount",
    "choose_journal_mode",
    "find_mount",
    "is_local",
    "lock_problem",
]

# Filesystem types on which every process that can see a file runs on the
# same kernel, so a shared mmap of ``-shm`` is coherent and WAL is safe. It is
# an allow-list on purpose: network and cluster filesystems (nfs, cifs, smb3,
# 9p, ceph, glusterfs, lustre, gpfs, virtiofs, vboxsf...) and every FUSE type
# ("fuse.sshfs", "fuseblk" for ntfs-3g, ...) are left out, since FUSE can hide
# any remote backend and we cannot tell which.
#
# * ext2/3/4, xfs, btrfs, zfs, f2fs, jfs, reiserfs, nilfs2, bcachefs: Linux
#   disk filesystems.
# * tmpfs, ramfs: memory-backed, necessarily one host.
# * overlay: container root filesystems. Its upper layer is almost always a
#   local disk; an overlay stacked on NFS is possible but rare enough that
#   refusing every container's default filesystem would be the worse error.
# * squashfs, erofs, iso9660: read-only local images; a WAL store shipped in
#   one must still open for reading.
# * vfat, msdos, exfat, ntfs3: removable and dual-boot disks through kernel
#   drivers; one host at a time.
# * apfs, hfs, hfsplus (Linux's name for hfs), ufs: macOS and BSD disks.
LOCAL_FILESYSTEMS: frozenset[str] = frozenset(
    {
        "apfs",
        "bcachefs",
        "btrfs",
        "erofs",
        "exfat",
        "ext2",
        "ext3",
        "ext4",
        "f2fs",
        "hfs",
        "hfsplus",
        "iso9660",
        "jfs",
        "msdos",
        "nilfs2",
        "ntfs3",
        "overlay",
        "ramfs",
        "reiserfs",
        "squashfs",
        "tmpfs",
        "ufs",
        "vfat",
        "xfs",
        "zfs",
    }
)

_NFS_TYPES = frozenset({"nfs", "nfs4"})

# ``local_lock=`` values under which NFS keeps POSIX (fcntl) locks on this
# host only. SQLite's unix VFS locks with fcntl, so "posix" and "all" leave
# other hosts unlocked. "flock" is deliberately absent: it makes only flock(2)
# local, and SQLite never calls flock, so its fcntl locks still reach the
# server and work across hosts.
_LOCAL_FCNTL_LOCKS = frozenset({"posix", "all"})

# Filesystems whose files report a per-subvolume device number that differs
# from the one in mountinfo; for these alone the mount is found by path.
_PER_SUBVOLUME_DEVICES = frozenset({"btrfs", "bcachefs"})

_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class Mount:
    """One mounted filesystem, as much of it as the journal choice needs."""

    fstype: str
    mount_point: str
    source: str
    options: frozenset[str]

    def __str__(self) -> str:
        return f"{self.fstype} mounted at {self.mount_point} from {self.source}"


def find_mount(path: str, *, mountinfo: str | None = None) -> Mount | None:
    """The mount holding ``path`` (the directory that holds the store).

    Linux: the line of ``/proc/self/mountinfo`` whose ``major:minor`` equals
    ``os.stat(path).st_dev``; if several lines share it (bind mounts), the one
    whose mount point is the longest prefix of the real path. ``mountinfo``
    injects the table's text, for tests. macOS: ``statfs(2)``. A path that does
    not exist yet is looked up through its nearest existing ancestor, which is
    where it would be created. None when it cannot tell.
    """
    real = _existing_ancestor(os.path.realpath(path))
    if real is None:
        return None
    if mountinfo is None:
        if sys.platform == "darwin":
            return _statfs_mount(real)
        try:
            with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
                mountinfo = f.read()
        except OSError:
            return None
    try:
        st_dev = os.stat(real).st_dev
    except OSError:
        return None
    return _pick_mount(_parse_mountinfo(mountinfo), real, st_dev)


def is_local(mount: Mount | None) -> bool:
    """Whether WAL is safe on ``mount``: only a type on the allow-list.

    An unknown mount (None) is not local: see the module docstring for why
    the doubt goes that way.
    """
    return mount is not None and mount.fstype in LOCAL_FILESYSTEMS


def lock_problem(mount: Mount | None) -> str | None:
    """Why POSIX locks on ``mount`` would not reach other hosts, or None.

    Only NFS is judged: ``nolock`` turns the lock protocol off, and
    ``local_lock=posix|all`` keeps fcntl locks on this host. A rollback
    journal on such a mount is unlocked between hosts, so two writers on
    different hosts would overwrite each other's pages.
    """
    if mount is None or mount.fstype not in _NFS_TYPES:
        return None
    if "nolock" in mount.options:
        return (
            f"the NFS mount at {mount.mount_point} uses the 'nolock' option, so "
            "file locks are not shared with other hosts"
        )
    for option in sorted(mount.options):
        key, _, value = option.partition("=")
        if key == "local_lock" and value in _LOCAL_FCNTL_LOCKS:
            return (
                f"the NFS mount at {mount.mount_point} uses the '{option}' "
                "option, so file locks are not shared with other hosts"
            )
    return None


_REQUESTED = frozenset({"auto", "wal", "rollback"})
_EXISTING = frozenset({None, "wal", "rollback"})


def choose_journal_mode(
    requested: str, mount: Mount | None, existing: str | None, *, path: str
) -> tuple[str, str]:
    """The journal mode to open the store at ``path`` in, and why.

    ``requested`` is the caller's ``journal_mode`` ("auto", "wal" or
    "rollback"); ``existing`` is the store's current mode, or None for a new
    store. Returns ``(mode, reason)`` with mode "wal" or "rollback" and reason
    one sentence for the log and ``multinode info``. Raises
    `UnsafeFilesystemError` where no mode is safe without the caller's word
    (DESIGN section 4): a WAL store on a filesystem that is not known to be
    local, or an NFS mount without working locks, unless ``requested`` is
    "wal", which declares that every process runs on this host.
    """
    if requested not in _REQUESTED:
        raise ValueError(
            f"journal_mode must be 'auto', 'wal' or 'rollback', not {requested!r}"
        )
    if existing not in _EXISTING:
        raise ValueError(
            f"existing journal mode must be None, 'wal' or 'rollback', not {existing!r}"
        )
    where = _where(mount)

    # The caller's "wal" is a promise that all processes share this host, so
    # neither the missing locks nor the network matter: the shared memory and
    # the locks both stay on this host.
    if requested == "wal":
        if existing == "rollback":
            return (
                "wal",
                f"switched from a rollback journal to WAL as requested, {where}",
            )
        if is_local(mount):
            return "wal", f"WAL as requested, {where}"
        return "wal", (
            f"WAL as requested, {where}: the caller declared that every "
            "process runs on this host"
        )

    problem = lock_problem(mount)
    if problem is not None:
        raise UnsafeFilesystemError(
            f"refusing to open {path}: {problem}. SQLite relies on those locks "
            "to keep writers on different hosts apart; without them two hosts "
            "can overwrite each other's changes and corrupt the store. Remount "
            "without 'nolock' or 'local_lock=posix|all' (local_lock=none or "
            "local_lock=flock keep locks working), or, if every process runs on "
            'this host, open it with journal_mode="wal".'
        )

    if existing == "wal" and not is_local(mount):
        raise UnsafeFilesystemError(
            f"refusing to open {path}: it is a WAL-mode store and it lies on "
            f"{where}, which is not a known local filesystem. WAL coordinates "
            "processes through shared memory (the -shm file mapped into each "
            "process), which works only when every process runs on one host; "
            "processes on other hosts would not see each other's changes and "
            "could corrupt the store. If every process that opens this store "
            'runs on this host, open it with journal_mode="wal". Otherwise '
            "convert it to a rollback journal from the host that owns the "
            'disk, by opening it there once with journal_mode="rollback".'
        )

    if requested == "rollback":
        if existing == "wal":
            return "rollback", (
                f"switched from WAL to a rollback journal as requested, {where}"
            )
        return "rollback", f"rollback journal as requested, {where}"

    if existing is not None:
        # Switching a rollback store to WAL would lock out every NFS client
        # of it, and this host cannot know whether there are any.
        name = "WAL" if existing == "wal" else "a rollback journal"
        return existing, f"the store already uses {name}; kept, {where}"
    if is_local(mount):
        return "wal", f"new store {where}, a local filesystem: WAL"
    return "rollback", (
        f"new store {where}, not a known local filesystem: a rollback journal, "
        "since WAL needs memory shared by every process on one host"
    )


def _where(mount: Mount | None) -> str:
    """Where the store lies, for messages: type and mount point."""
    if mount is None:
        return "on a filesystem multinode could not identify"
    return f"on {mount.fstype} at {mount.mount_point}"


def _existing_ancestor(path: str) -> str | None:
    """``path`` or its nearest ancestor that exists: a store's directory
    that is not made yet will be made on the filesystem of that ancestor."""
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent
    return path


def _unescape(field: str) -> str:
    """Undo the kernel's octal escapes (``\\040`` for a space, ``\\134`` for
    a backslash) in a mountinfo field."""
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def _parse_mountinfo(text: str) -> list[tuple[int, int, Mount]]:
    """Each well-formed mountinfo line as ``(major, minor, Mount)``.

    The format (proc(5)): id, parent id, major:minor, root, mount point,
    per-mount options, optional fields ending with "-", then type, source and
    super options. Malformed lines are skipped rather than guessed at.
    """
    mounts: list[tuple[int, int, Mount]] = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            dash = fields.index("-", 6)
            major_s, minor_s = fields[2].split(":")
            major, minor = int(major_s), int(minor_s)
            mount_point = _unescape(fields[4])
            per_mount = fields[5]
            fstype = _unescape(fields[dash + 1])
            source = _unescape(fields[dash + 2]) if len(fields) > dash + 2 else ""
            super_options = fields[dash + 3] if len(fields) > dash + 3 else ""
        except (ValueError, IndexError):
            continue
        options = frozenset(
            _unescape(o) for o in f"{per_mount},{super_options}".split(",") if o
        )
        mounts.append((major, minor, Mount(fstype, mount_point, source, options)))
    return mounts


def _under(path: str, mount_point: str) -> bool:
    """Whether ``path`` is ``mount_point`` or inside it, by whole components."""
    if mount_point == "/":
        return path.startswith("/")
    return path == mount_point or path.startswith(mount_point.rstrip("/") + "/")


def _longest_prefix(mounts: list[Mount], path: str) -> Mount | None:
    """The mount whose mount point is the longest prefix of ``path``; of
    equal ones the last, since a later mount on one point hides earlier."""
    best: Mount | None = None
    for mount in mounts:
        if _under(path, mount.mount_point) and (
            best is None or len(mount.mount_point) >= len(best.mount_point)
        ):
            best = mount
    return best


def _pick_mount(
    table: list[tuple[int, int, Mount]], real: str, st_dev: int
) -> Mount | None:
    """The mount of ``real`` (whose device is ``st_dev``) in ``table``."""
    same_device = [
        m for major, minor, m in table if (major, minor) == _split_dev(st_dev)
    ]
    if same_device:
        # Bind mounts show one filesystem at several points; all share the
        # type, and the one the path runs through has the right options.
        return _longest_prefix(same_device, real) or same_device[-1]

    # Btrfs subvolumes give their files a device number of their own that
    # mountinfo never lists. Fall back to the path only for such types, so a
    # table from another namespace cannot pass a network mount off as local.
    by_path = _longest_prefix([m for _, _, m in table], real)
    if by_path is not None and by_path.fstype in _PER_SUBVOLUME_DEVICES:
        return by_path
    return None


def _split_dev(st_dev: int) -> tuple[int, int]:
    return os.major(st_dev), os.minor(st_dev)


# struct statfs of macOS (64-bit inodes, the only layout since 10.6 on
# arm64 and the "$INODE64" symbol on x86_64), as far as the fields we read.
_MFSTYPENAMELEN = 16
_MAXPATHLEN = 1024
_MNT_RDONLY = 0x00000001


class _StatFs(ctypes.Structure):
    _fields_ = [
        ("f_bsize", ctypes.c_uint32),
        ("f_iosize", ctypes.c_int32),
        ("f_blocks", ctypes.c_uint64),
        ("f_bfree", ctypes.c_uint64),
        ("f_bavail", ctypes.c_uint64),
        ("f_files", ctypes.c_uint64),
        ("f_ffree", ctypes.c_uint64),
        ("f_fsid", ctypes.c_int32 * 2),
        ("f_owner", ctypes.c_uint32),
        ("f_type", ctypes.c_uint32),
        ("f_flags", ctypes.c_uint32),
        ("f_fssubtype", ctypes.c_uint32),
        ("f_fstypename", ctypes.c_char * _MFSTYPENAMELEN),
        ("f_mntonname", ctypes.c_char * _MAXPATHLEN),
        ("f_mntfromname", ctypes.c_char * _MAXPATHLEN),
        ("f_flags_ext", ctypes.c_uint32),
        ("f_reserved", ctypes.c_uint32 * 7),
    ]


def _statfs_mount(path: str) -> Mount | None:
    """macOS: the mount of ``path`` from ``statfs(2)``, or None on failure."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        try:
            statfs = getattr(libc, "statfs$INODE64")
        except AttributeError:
            statfs = libc.statfs
    except (OSError, AttributeError):
        return None
    statfs.argtypes = [ctypes.c_char_p, ctypes.POINTER(_StatFs)]
    statfs.restype = ctypes.c_int
    buf = _StatFs()
    if statfs(os.fsencode(path), ctypes.byref(buf)) != 0:
        return None

    def text(raw: bytes) -> str:
        return os.fsdecode(raw.split(b"\0", 1)[0])

    return Mount(
        fstype=text(buf.f_fstypename),
        mount_point=text(buf.f_mntonname),
        source=text(buf.f_mntfromname),
        options=frozenset({"ro" if buf.f_flags & _MNT_RDONLY else "rw"}),
    )
