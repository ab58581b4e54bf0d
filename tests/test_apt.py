"""Tests for builder.components.apt: signed indexes from a local fake mirror, lookup, closure."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import json
import lzma
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from builder.components import apt, keyring
from builder.components.apt import Archive, debian_arch
from builder.components.cache import Cache
from builder.components.deb import unpack_deb
from builder.components.mirror import AptSource, find_host_sources
from builder.errors import BuildError
from builder.process import run

HASH = "0" * 64


def stanza(name: str, version: str, **fields: str) -> str:
    """One Packages stanza with made-up pool path and digest."""
    lines = [f"Package: {name}", f"Version: {version}", "Architecture: amd64",
             f"Filename: pool/main/{name[0]}/{name}/{name}_{version}_amd64.deb",
             "Size: 1234", f"SHA256: {HASH}"]
    lines += [f"{key.replace('_', '-')}: {value}" for key, value in fields.items()]
    lines += ["Description: a test package", " with a continuation line", " ."]
    return "\n".join(lines) + "\n"


PACKAGES = "\n".join([
    stanza("busybox-static", "1:1.35.0-4"),
    stanza("busybox-static", "1:1.36.1-1"),
    stanza("busybox-static", "1.99-1"),
    stanza("ethtool", "1:6.1-1", Depends="libc6 (>= 2.34), libmnl0 (>= 1.0.3-4~)"),
    stanza("libc6", "2.36-9", Depends="libgcc-s1", Pre_Depends="gcc-12-base"),
    stanza("libgcc-s1", "12.2.0-14", Depends="gcc-12-base (= 12.2.0-14), libc6 (>= 2.35)"),
    stanza("gcc-12-base", "12.2.0-14"),
    stanza("libmnl0", "1.0.4-3", Depends="libc6:any (>= 2.17)"),
    stanza("mawk", "1.3.4-1", Provides="awk"),
    stanza("original-awk", "2012-12-1", Provides="awk (= 1.0)"),
    stanza("tool", "1.0", Depends="not-in-archive | libmnl0, awk"),
    stanza("uses-mawk", "1.0", Depends="mawk, awk"),
    stanza("broken", "1.0", Depends="libc6, gone (>= 2) | also-gone"),
])


@pytest.fixture
def archive() -> Archive:
    return Archive.from_packages_text(PACKAGES, "x86_64")


@pytest.mark.parametrize(("arch", "expected"), [
    ("x86_64", "amd64"), ("amd64", "amd64"), ("aarch64", "arm64"), ("arm64", "arm64"),
    ("armhf", "armhf"), ("armv7l", "armhf"), ("ppc64el", "ppc64el"), ("ppc64le", "ppc64el"),
    ("riscv64", "riscv64"),
])
def test_debian_arch(arch: str, expected: str) -> None:
    assert debian_arch(arch) == expected


def test_debian_arch_unknown() -> None:
    with pytest.raises(BuildError) as exc:
        debian_arch("mips")
    assert exc.value.message == (
        "unknown architecture 'mips'; expected one of: aarch64, amd64, arm64, armhf, armv7l, "
        "ppc64el, ppc64le, riscv64, x86_64"
    )


# --- lookup and closure on an in-memory index -------------------------------------------------

def test_find_highest_version(archive: Archive) -> None:
    pkg = archive.find("busybox-static")
    assert pkg == apt.DebPackage(
        name="busybox-static", version="1:1.36.1-1", arch="amd64",
        filename="pool/main/b/busybox-static/busybox-static_1:1.36.1-1_amd64.deb",
        sha256=HASH, size=1234, uri="http://archive.invalid/debian", depends=(),
    )
    assert pkg.url == ("http://archive.invalid/debian/"
                       "pool/main/b/busybox-static/busybox-static_1:1.36.1-1_amd64.deb")


def test_find_exact_version(archive: Archive) -> None:
    assert archive.find("busybox-static", "1.99-1").version == "1.99-1"
    with pytest.raises(BuildError) as exc:
        archive.find("busybox-static", "2.0")
    assert exc.value.message == (
        "Debian package 'busybox-static' has no version 2.0 for amd64 in local; "
        "available: 1.99-1, 1:1.35.0-4, 1:1.36.1-1"
    )


def test_find_depends_include_pre_depends(archive: Archive) -> None:
    assert archive.find("libc6").depends == ("libgcc-s1", "gcc-12-base")
    assert archive.find("ethtool").depends == ("libc6 (>= 2.34)", "libmnl0 (>= 1.0.3-4~)")


@pytest.mark.parametrize(("name", "message"), [
    ("busybox-statc", "Debian package 'busybox-statc' not found for amd64 in local; "
     "did you mean 'busybox-static'?"),
    ("libc", "Debian package 'libc' not found for amd64 in local; did you mean 'libc6' or "
     "'libgcc-s1'?"),
    ("ethtol", "Debian package 'ethtol' not found for amd64 in local; did you mean 'ethtool' or "
     "'tool'?"),
    ("awk", "Debian package 'awk' is virtual for amd64 in local; name the package that "
     "provides it: 'mawk' or 'original-awk'"),
    ("zzzzzz", "Debian package 'zzzzzz' not found for amd64 in local"),
])
def test_find_unknown(archive: Archive, name: str, message: str) -> None:
    with pytest.raises(BuildError) as exc:
        archive.find(name)
    assert exc.value.message == message


def test_find_unknown_three_choices() -> None:
    archive = Archive.from_packages_text("\n".join(stanza(f"foo{i}", "1") for i in range(5)),
                                         "amd64")
    with pytest.raises(BuildError) as exc:
        archive.find("foo")
    assert exc.value.message == (
        "Debian package 'foo' not found for amd64 in local; did you mean 'foo4', 'foo3' or 'foo2'?")


def names(packages: list[apt.DebPackage]) -> list[str]:
    return [p.name for p in packages]


def test_closure(archive: Archive) -> None:
    assert names(archive.closure(["ethtool"])) == [
        "ethtool", "gcc-12-base", "libc6", "libgcc-s1", "libmnl0"]


def test_closure_alternatives_and_virtual(archive: Archive) -> None:
    # The first alternative that exists wins; 'awk' goes to the first provider by name.
    assert names(archive.closure(["tool"])) == [
        "gcc-12-base", "libc6", "libgcc-s1", "libmnl0", "mawk", "tool"]
    assert names(archive.closure(["awk"])) == ["mawk"]
    assert names(archive.closure(["uses-mawk"])) == ["mawk", "uses-mawk"]


def test_closure_prefers_a_chosen_provider(archive: Archive) -> None:
    assert names(archive.closure(["original-awk", "tool"])) == [
        "gcc-12-base", "libc6", "libgcc-s1", "libmnl0", "original-awk", "tool"]


def test_closure_exclude(archive: Archive) -> None:
    assert names(archive.closure(["ethtool"], exclude=frozenset({"libc6"}))) == [
        "ethtool", "libmnl0"]
    assert names(archive.closure(["tool"], exclude=frozenset({"awk", "libc6"}))) == [
        "libmnl0", "tool"]


def test_closure_unresolvable(archive: Archive) -> None:
    with pytest.raises(BuildError) as exc:
        archive.closure(["broken"])
    assert exc.value.message == (
        "Debian package 'broken' 1.0 depends on 'gone (>= 2) | also-gone', "
        "which nothing for amd64 in local provides"
    )


def test_closure_unknown_name(archive: Archive) -> None:
    with pytest.raises(BuildError, match=r"'ethtol' not found .* did you mean 'ethtool'"):
        archive.closure(["ethtol"])


def test_parse_packages_skips_incomplete_stanzas() -> None:
    index = apt.parse_packages(b"Package: a\nVersion: 1\n\n" + stanza("b", "2").encode(), "u")
    assert sorted(index.names) == ["b"]


def test_no_sources(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"^no apt sources to resolve Debian packages from$"):
        Archive([], "amd64", Cache(tmp_path)).find("busybox")


# --- a signed fake mirror on localhost --------------------------------------------------------

def gpg(home: Path, *args: str) -> bytes:
    return run(["gpg", "--batch", "--homedir", home, "--pinentry-mode", "loopback",
                "--passphrase", "", *args]).stdout


@dataclass
class Key:
    home: Path
    keyring: Path
    armored: Path


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Key]]:
    """Two throwaway signing keys: 'archive' (trusted by the tests) and 'stranger'."""
    if shutil.which("gpg") is None or shutil.which("gpgv") is None:
        pytest.skip("gpg and gpgv are needed to sign a fake mirror")
    made = {}
    for name in ("archive", "stranger"):
        home = tmp_path_factory.mktemp(f"gpg-{name}")
        home.chmod(0o700)
        gpg(home, "--quick-gen-key", f"{name} <{name}@example.invalid>", "ed25519", "sign",
            "never")
        (home / "key.gpg").write_bytes(gpg(home, "--export"))
        (home / "key.asc").write_bytes(gpg(home, "--export", "--armor"))
        made[name] = Key(home, home / "key.gpg", home / "key.asc")
    yield made
    for key in made.values():
        run(["gpgconf", "--homedir", key.home, "--kill", "gpg-agent"], check=False)


class Mirror:
    """A folder served over HTTP on 127.0.0.1 that records the paths asked for."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[str] = []
        mirror = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self) -> None:
                mirror.requests.append(self.path)
                super().do_GET()

            def log_message(self, format: str, *args: object) -> None:
                pass

        handler = functools.partial(Handler, directory=str(root))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.uri = f"http://127.0.0.1:{self.server.server_address[1]}/debian"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def publish(self, packages: str, key: Key, *, suite: str = "test", gz: bool = False,
                by_hash: bool = True, files: dict[str, bytes] | None = None) -> None:
        """Write dists/<suite> with a Packages index for amd64, signed with ``key``."""
        dist = self.root / "debian/dists" / suite
        raw = packages.encode()
        data = gzip.compress(raw) if gz else lzma.compress(raw)
        name = "main/binary-amd64/Packages" + (".gz" if gz else ".xz")
        digest = hashlib.sha256(data).hexdigest()
        target = dist / "main/binary-amd64" / ("by-hash/SHA256/" + digest if by_hash else
                                               Path(name).name)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        release = (
            f"Origin: Test\nSuite: {suite}\nArchitectures: amd64\nComponents: main\n"
            + ("Acquire-By-Hash: yes\n" if by_hash else "")
            + "SHA256:\n"
            + f" {hashlib.sha256(raw).hexdigest()} {len(raw)} main/binary-amd64/Packages\n"
            + f" {digest} {len(data)} {name}\n"
        )
        (dist / "Release").write_text(release)
        (dist / "InRelease").unlink(missing_ok=True)
        gpg(key.home, "--clearsign", "--output", str(dist / "InRelease"), str(dist / "Release"))
        for path, content in (files or {}).items():
            (self.root / "debian" / path).parent.mkdir(parents=True, exist_ok=True)
            (self.root / "debian" / path).write_bytes(content)

    def source(self, key: Key | None, suite: str = "test") -> AptSource:
        return AptSource(self.uri, (suite,), ("main",), key.keyring if key else None)


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[Mirror]:
    served = Mirror(tmp_path / "www")
    yield served
    served.server.shutdown()
    served.server.server_close()


def test_mirror_cold_then_warm(mirror: Mirror, keys: dict[str, Key], tmp_path: Path) -> None:
    mirror.publish(PACKAGES, keys["archive"])
    cache = Cache(tmp_path / "cache")
    source = mirror.source(keys["archive"])
    assert Archive([source], "amd64", cache).find("ethtool").uri == mirror.uri
    assert [p.split("/")[-1] for p in mirror.requests] == [
        "InRelease", hashlib.sha256(lzma.compress(PACKAGES.encode())).hexdigest()]
    mirror.requests.clear()
    archive = Archive([source], "amd64", cache)
    assert names(archive.closure(["ethtool"])) == [
        "ethtool", "gcc-12-base", "libc6", "libgcc-s1", "libmnl0"]
    assert mirror.requests == []  # a fresh InRelease and the parsed index are reused
    offline = Archive([source], "amd64", Cache(tmp_path / "cache", offline=True))
    assert offline.find("busybox-static").version == "1:1.36.1-1"


def test_mirror_without_by_hash_and_gz(mirror: Mirror, keys: dict[str, Key],
                                       tmp_path: Path) -> None:
    mirror.publish(PACKAGES, keys["archive"], gz=True, by_hash=False)
    archive = Archive([mirror.source(keys["archive"])], "amd64", Cache(tmp_path / "cache"))
    assert archive.find("libmnl0").version == "1.0.4-3"
    assert mirror.requests[-1] == "/debian/dists/test/main/binary-amd64/Packages.gz"


def test_mirror_armored_keyring(mirror: Mirror, keys: dict[str, Key], tmp_path: Path) -> None:
    mirror.publish(PACKAGES, keys["archive"])
    source = AptSource(mirror.uri, ("test",), ("main",), keys["archive"].armored)
    assert Archive([source], "amd64", Cache(tmp_path)).find("mawk").name == "mawk"


def test_mirror_default_keyrings(mirror: Mirror, keys: dict[str, Key], tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    trusted = tmp_path / "trusted.gpg.d"
    trusted.mkdir()
    shutil.copy(keys["archive"].armored, trusted / "test.asc")
    (trusted / "ignored.txt").write_text("not a keyring")
    monkeypatch.setattr(keyring, "DEFAULT_KEYRINGS", (keys["stranger"].keyring,))
    monkeypatch.setattr(keyring, "TRUSTED_KEYRINGS", trusted)
    mirror.publish(PACKAGES, keys["archive"])
    assert Archive([mirror.source(None)], "amd64", Cache(tmp_path)).find("mawk").name == "mawk"


def test_mirror_stale_index_is_fetched_again(mirror: Mirror, keys: dict[str, Key],
                                             tmp_path: Path) -> None:
    mirror.publish(PACKAGES, keys["archive"])
    cache = Cache(tmp_path / "cache")
    source = mirror.source(keys["archive"])
    Archive([source], "amd64", cache).find("ethtool")
    (pointer,) = (cache.root / "indexes").glob("*.json")
    data = json.loads(pointer.read_text())
    pointer.write_text(json.dumps({**data, "fetched": time.time() - 25 * 3600}))
    mirror.publish(PACKAGES + "\n" + stanza("ethtool", "1:6.2-1"), keys["archive"])
    mirror.requests.clear()
    assert Archive([source], "amd64", cache).find("ethtool").version == "1:6.2-1"
    assert mirror.requests[0] == "/debian/dists/test/InRelease"
    # Offline, the cached copy is used however old it is.
    pointer.write_text(json.dumps({**json.loads(pointer.read_text()), "fetched": 0}))
    offline = Archive([source], "amd64", Cache(tmp_path / "cache", offline=True))
    assert offline.find("ethtool").version == "1:6.2-1"


def test_mirror_down_uses_the_stale_index(mirror: Mirror, keys: dict[str, Key], tmp_path: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
    mirror.publish(PACKAGES, keys["archive"])
    cache = Cache(tmp_path / "cache")
    source = mirror.source(keys["archive"])
    Archive([source], "amd64", cache).find("ethtool")
    (pointer,) = (cache.root / "indexes").glob("*.json")
    pointer.write_text(json.dumps({**json.loads(pointer.read_text()), "fetched": 0}))
    shutil.rmtree(mirror.root / "debian/dists")
    assert Archive([source], "amd64", cache).find("ethtool").version == "1:6.1-1"
    assert f"downloading {mirror.uri}/dists/test/InRelease failed: HTTP 404; using the copy " \
        "cached" in caplog.text


def test_offline_without_cached_index(mirror: Mirror, keys: dict[str, Key],
                                      tmp_path: Path) -> None:
    archive = Archive([mirror.source(keys["archive"])], "amd64", Cache(tmp_path, offline=True))
    with pytest.raises(BuildError) as exc:
        archive.find("ethtool")
    assert exc.value.message == (
        f"{mirror.uri}/dists/test/InRelease is not in the cache and --offline forbids "
        "downloading it"
    )
    assert exc.value.hint == "run once with network access to cache the Debian indexes"
    assert mirror.requests == []


def test_tampered_cached_inrelease(mirror: Mirror, keys: dict[str, Key], tmp_path: Path) -> None:
    mirror.publish(PACKAGES, keys["archive"])
    cache = Cache(tmp_path / "cache")
    source = mirror.source(keys["archive"])
    Archive([source], "amd64", cache).find("ethtool")
    (pointer,) = (cache.root / "indexes").glob("*.json")
    blob = cache.blob_path(json.loads(pointer.read_text())["sha256"])
    blob.write_bytes(blob.read_bytes().replace(b"Origin: Test", b"Origin: Evil"))
    with pytest.raises(BuildError) as exc:
        Archive([source], "amd64", cache).find("ethtool")
    assert exc.value.message == f"{mirror.uri}/dists/test/InRelease: has a BAD OpenPGP signature"
    assert exc.value.hint == f"the cached copy was modified; delete {pointer} to download it again"


def test_foreign_signature(mirror: Mirror, keys: dict[str, Key], tmp_path: Path) -> None:
    mirror.publish(PACKAGES, keys["stranger"])
    archive = Archive([mirror.source(keys["archive"])], "amd64", Cache(tmp_path))
    with pytest.raises(BuildError) as exc:
        archive.find("ethtool")
    assert exc.value.message == (
        f"{mirror.uri}/dists/test/InRelease: is signed by no key in {keys['archive'].keyring}")
    assert exc.value.hint == "the mirror served an index not signed by a trusted key"
    assert not list((tmp_path / "indexes").glob("*.json"))  # nothing unverified is remembered


def test_unsigned_release(mirror: Mirror, keys: dict[str, Key], tmp_path: Path) -> None:
    mirror.publish(PACKAGES, keys["archive"])
    dist = mirror.root / "debian/dists/test"
    shutil.copy(dist / "Release", dist / "InRelease")
    archive = Archive([mirror.source(keys["archive"])], "amd64", Cache(tmp_path))
    with pytest.raises(BuildError, match=r"InRelease: has no valid OpenPGP signature$"):
        archive.find("ethtool")


def test_packages_not_matching_release(mirror: Mirror, keys: dict[str, Key],
                                       tmp_path: Path) -> None:
    mirror.publish(PACKAGES, keys["archive"], by_hash=False)
    (mirror.root / "debian/dists/test/main/binary-amd64/Packages.xz").write_bytes(
        lzma.compress(b"Package: evil\n"))
    archive = Archive([mirror.source(keys["archive"])], "amd64", Cache(tmp_path))
    with pytest.raises(BuildError, match=r"Packages\.xz: sha256 mismatch"):
        archive.find("ethtool")


def test_mirror_without_the_arch(mirror: Mirror, keys: dict[str, Key], tmp_path: Path) -> None:
    mirror.publish(PACKAGES, keys["archive"])
    archive = Archive([mirror.source(keys["archive"])], "arm64", Cache(tmp_path))
    with pytest.raises(BuildError) as exc:
        archive.find("ethtool")
    assert exc.value.message == "the apt sources have no Packages index for arm64 in test"


def test_fetch_checks_the_digest(mirror: Mirror, keys: dict[str, Key], tmp_path: Path) -> None:
    content = b"not really a deb"
    pool = "pool/main/h/hello/hello_1_amd64.deb"
    packages = "\n".join([
        stanza("hello", "1").replace(HASH, hashlib.sha256(content).hexdigest()),
        stanza("bad", "1").replace("pool/main/b/bad/bad_1_amd64.deb", pool),
    ])
    mirror.publish(packages, keys["archive"], files={pool: content})
    archive = Archive([mirror.source(keys["archive"])], "amd64", Cache(tmp_path))
    assert archive.fetch(archive.find("hello")).read_bytes() == content
    with pytest.raises(BuildError, match="sha256 mismatch"):
        archive.fetch(archive.find("bad"))


# --- the host's real mirror -------------------------------------------------------------------

@pytest.fixture(scope="module")
def host_cache(tmp_path_factory: pytest.TempPathFactory) -> Cache:
    if not find_host_sources():
        pytest.skip("the host has no 'deb' apt sources")
    return Cache(tmp_path_factory.mktemp("host-cache"))


@pytest.mark.network
def test_host_mirror_arm64(host_cache: Cache) -> None:
    start = time.monotonic()
    archive = Archive(find_host_sources(), "arm64", host_cache)
    busybox = archive.find("busybox-static")
    cold = time.monotonic() - start
    assert busybox.arch == "arm64"
    assert archive.find("ethtool").arch == "arm64"
    assert {"ethtool", "libc6", "libmnl0"} <= set(names(archive.closure(["ethtool"])))
    tree = unpack_deb(archive.fetch(busybox), host_cache)
    header = (tree / "bin/busybox").read_bytes()[:20]
    assert header[:4] == b"\x7fELF"
    assert int.from_bytes(header[18:20], "little") == 183  # EM_AARCH64
    start = time.monotonic()
    Archive(find_host_sources(), "arm64", host_cache).find("busybox-static")
    warm = time.monotonic() - start
    print(f"arm64 index load: cold {cold:.2f} s, warm {warm:.2f} s")
    assert warm < 2


@pytest.mark.network
def test_host_mirror_tampered_inrelease(host_cache: Cache, tmp_path: Path) -> None:
    Archive(find_host_sources(), "arm64", host_cache).find("busybox-static")
    copy = Cache(tmp_path / "cache")
    shutil.copytree(host_cache.root, copy.root)
    pointer = next((copy.root / "indexes").glob("*.json"))
    blob = copy.blob_path(json.loads(pointer.read_text())["sha256"])
    blob.write_bytes(blob.read_bytes().replace(b"SHA256:", b"SHA256:\n 0 1 main/binary-arm64/Packages.xz", 1))
    with pytest.raises(BuildError) as exc:
        Archive(find_host_sources(), "arm64", copy).find("busybox-static")
    assert exc.value.message.endswith("/InRelease: has a BAD OpenPGP signature")
    assert exc.value.hint == f"the cached copy was modified; delete {pointer} to download it again"
