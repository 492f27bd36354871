"""``scratchpack build`` end to end: real images built in the Docker engine and run.

Every image is built by the command line (``python -m scratchpack build``) from the
repository's top directory, under a unique ``scratchpack-test/NAME:ID`` tag that a
fixture removes afterwards, failures included. Containers are created from those
images only (``containers.create`` + ``start``, never ``run``), with no network, and
removed at once. Nothing is ever pulled.

Images that several tests read are built once per module.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import pytest

from tests import cli

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLES = REPO_ROOT / "samples"
HELLO = SAMPLES / "hello-world" / "hello-world"
THREADS = SAMPLES / "threads-cpp" / "threads-cpp"
GREET = SAMPLES / "origin-lib" / "greet"
HELLO_IN_IMAGE = "/app/hello-world"  # a user's BINARY lands under /app (plan.relocate)
BUSYBOX = "/bin/busybox"  # Debian's busybox-static (see the static_busybox fixture)

HELLO_OUTPUT = "Hello from scratchpack!\n"
THREADS_OUTPUT = (
    "threads: 4 workers summed 4950\n"
    "cancel: worker cancelled\n"
    "exception: caught boom from fail()\n"
    "ok\n"
)
GREET_OUTPUT = "greetings from libgreet 1.0.0\n"

# The PATH every image gets (scratchpack's default), and the environment the host runs
# its programs in so that they see what they see in a container running as root.
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HOST_RUN_ENV = {"PATH": IMAGE_PATH, "HOME": "/root"}
UNREACHABLE_ENGINE = "unix:///nonexistent.sock"

# Engine tests build in the engine, never with the built-in writer (which --engine auto
# falls back to, writing NAME_TAG.tar into the working directory, when no engine answers).
IN_ENGINE = ("--engine", "docker")

CLI_TIMEOUT = 300
RUN_TIMEOUT = 120

# Nonroot/nobody as scratchpack writes them (scratchpack/essentials.py).
NONROOT_UID = 65532
NOBODY_UID = 65534


# -- running the command line and the host ----------------------------------------------------


def scratchpack(
    *args: str | os.PathLike[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m scratchpack ARGS`` from the repository's top, without loader variables."""
    return cli.scratchpack(*args, cwd=REPO_ROOT, env=env, unset=cli.LOADER_ENV, timeout=CLI_TIMEOUT)


def describe(proc: subprocess.CompletedProcess[str]) -> str:
    return (
        f"exit {proc.returncode}: {' '.join(map(str, proc.args))}\n"
        f"--- stdout\n{proc.stdout}--- stderr\n{proc.stderr}"
    )


def assert_clear_error(proc: subprocess.CompletedProcess[str], status: int, *words: str) -> str:
    """Exit ``status``, exactly one line on stderr starting ``scratchpack:``, no traceback."""
    assert proc.returncode == status, describe(proc)
    assert "Traceback" not in proc.stderr, describe(proc)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, describe(proc)
    assert lines[0].startswith("scratchpack: "), describe(proc)
    for word in words:
        assert word in lines[0], f"{word!r} not in the error line:\n{describe(proc)}"
    return lines[0]


def gcc(source: str, output: Path, *flags: str) -> Path:
    """Compile C ``source`` into ``output`` (an executable, or whatever ``flags`` make)."""
    compiler = shutil.which("gcc")
    if compiler is None:
        pytest.skip("gcc is not installed")
    src = output.with_name(output.name + ".c")
    src.write_text(source)
    proc = subprocess.run(
        [compiler, "-O2", "-o", str(output), str(src), *flags],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return output


# -- images and containers --------------------------------------------------------------------


def remove_image(client: docker.DockerClient, tag: str) -> None:
    """Remove the tag (only untagging when another tag names the same image)."""
    with contextlib.suppress(docker.errors.ImageNotFound, docker.errors.NotFound):
        client.images.remove(tag, force=True)


class Tags:
    """Unique image tags; every one handed out is removed at teardown, built or not."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client
        self.tags: list[str] = []

    def new(self, name: str) -> str:
        tag = f"scratchpack-test/{name}:{uuid.uuid4().hex[:12]}"
        self.tags.append(tag)
        return tag

    def remove_all(self) -> None:
        for tag in self.tags:
            remove_image(self.client, tag)

    def build(
        self, name: str, *args: str | os.PathLike[str], env: dict[str, str] | None = None
    ) -> str:
        """``scratchpack build ARGS -t TAG``, which must succeed; returns the tag."""
        tag = self.new(name)
        proc = scratchpack("build", *IN_ENGINE, *args, "-t", tag, env=env)
        assert proc.returncode == 0, describe(proc)
        assert self.client.images.list(name=tag), f"no image {tag} after:\n{describe(proc)}"
        return tag


@pytest.fixture
def tags(docker_client) -> Iterator[Tags]:
    pool = Tags(docker_client)
    try:
        yield pool
    finally:
        pool.remove_all()


@pytest.fixture(scope="module")
def module_tags(docker_client) -> Iterator[Tags]:
    pool = Tags(docker_client)
    try:
        yield pool
    finally:
        pool.remove_all()


def image_exists(client: docker.DockerClient, tag: str) -> bool:
    return bool(client.images.list(name=tag))


@dataclass(frozen=True)
class Ran:
    exit_code: int
    stdout: str
    stderr: str


def run_image(
    client: docker.DockerClient,
    image: str,
    args: Sequence[str] | None = None,
    entrypoint: Sequence[str] | None = None,
    network_disabled: bool = True,
) -> Ran:
    """Run a local image to completion with no network; stdout and stderr apart.

    ``network_disabled=False`` keeps ``network_mode="none"`` (loopback only, no network)
    but lets Docker write the container's /etc/hosts, which a disabled network leaves empty.
    """
    client.images.get(image)  # raises ImageNotFound: the engine must never pull
    options: dict = {"network_mode": "none", "network_disabled": network_disabled}
    if entrypoint is not None:
        options["entrypoint"] = list(entrypoint)
    container = client.containers.create(image, list(args) if args is not None else None, **options)
    try:
        container.start()
        status = container.wait(timeout=RUN_TIMEOUT)
        out = container.logs(stdout=True, stderr=False).decode("utf-8", "replace")
        err = container.logs(stdout=False, stderr=True).decode("utf-8", "replace")
        return Ran(int(status["StatusCode"]), out, err)
    finally:
        container.remove(force=True)


def image_files(client: docker.DockerClient, tag: str, workdir: Path) -> dict[str, tarfile.TarInfo]:
    """Every path of the image (its layers merged, as ``docker save`` has them)."""
    archive = workdir / f"{uuid.uuid4().hex}.tar"
    try:
        with archive.open("wb") as stream:
            for chunk in client.images.get(tag).save(named=False):
                stream.write(chunk)
        members: dict[str, tarfile.TarInfo] = {}
        with tarfile.open(archive) as outer:
            manifest_file = outer.extractfile("manifest.json")
            assert manifest_file is not None
            manifest = json.load(manifest_file)
            for layer in manifest[0]["Layers"]:
                layer_file = outer.extractfile(layer)
                assert layer_file is not None
                with tarfile.open(fileobj=layer_file) as inner:
                    for member in inner.getmembers():
                        name = "/" + member.name.strip("/").removeprefix("./")
                        if name == "/":
                            continue
                        assert ".wh." not in name, f"whiteout in a FROM-scratch image: {name}"
                        members[name] = member
        return members
    finally:
        archive.unlink(missing_ok=True)


@dataclass(frozen=True)
class Planned:
    kind: str  # dir | file | symlink
    mode: int
    uid: int
    gid: int
    size: int
    target: str | None

    def __str__(self) -> str:
        extra = {"symlink": f" -> {self.target}", "file": f" {self.size} bytes"}.get(self.kind, "")
        return f"{self.kind} {self.mode:04o} {self.uid}:{self.gid}{extra}"


def _planned(host: Path, uid: int, gid: int) -> Planned:
    info = host.lstat()
    if stat.S_ISLNK(info.st_mode):
        return Planned("symlink", 0o777, uid, gid, 0, os.readlink(host))
    if stat.S_ISDIR(info.st_mode):
        return Planned("dir", stat.S_IMODE(info.st_mode), uid, gid, 0, None)
    return Planned("file", stat.S_IMODE(info.st_mode), uid, gid, info.st_size, None)


def _walk(host_top: Path, image_top: str, uid: int, gid: int, into: dict[str, Planned]) -> None:
    for current, dirs, files in os.walk(host_top):
        for name in [*dirs, *files]:
            host = Path(current, name)
            into[image_top.rstrip("/") + "/" + str(host.relative_to(host_top))] = _planned(
                host, uid, gid
            )


def context_plan(context: Path) -> dict[str, Planned]:
    """What the build context asks the image to hold: ``rootfs/`` and each ``COPY --chown``."""
    plan: dict[str, Planned] = {}
    _walk(context / "rootfs", "/", 0, 0, plan)
    for line in (context / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY --chown="):
            owner, paths = line.removeprefix("COPY --chown=").split(" ", 1)
            source, dest = (re.sub(r"\\(.)", r"\1", path) for path in json.loads(paths))
            uid, gid = (int(part) for part in owner.split(":"))
            if not source.endswith("/"):
                plan[dest] = _planned(context / source, uid, gid)
            # "COPY dir/ dest/" copies the contents; an existing dest keeps its owner.
            _walk(context / source, dest.rstrip("/") or "/", uid, gid, plan)
    return plan


def member_kind(member: tarfile.TarInfo) -> str:
    if member.isdir():
        return "dir"
    if member.issym():
        return "symlink"
    if member.isfile():
        return "file"
    return f"other:{member.type!r}"


# -- the samples ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def samples(repo_root: Path) -> Path:
    """``make -C samples``: the three sample programs, built in place."""
    proc = subprocess.run(
        ["make", "-C", str(repo_root / "samples")],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for binary in (HELLO, THREADS, GREET):
        assert binary.is_file(), f"make -C samples did not build {binary}"
    return repo_root / "samples"


@pytest.fixture(scope="module")
def sample_images(module_tags: Tags, samples: Path) -> dict[str, str]:
    return {
        "hello-world": module_tags.build("hello-world", HELLO),
        "threads-cpp": module_tags.build("threads-cpp", THREADS),
        "greet": module_tags.build("greet", GREET),
    }


@pytest.mark.engine
@pytest.mark.parametrize("sample", ["hello-world", "threads-cpp", "greet"])
def test_sample_image_runs_without_network(
    docker_client, sample_images: dict[str, str], sample: str
) -> None:
    expected = {"hello-world": HELLO_OUTPUT, "threads-cpp": THREADS_OUTPUT, "greet": GREET_OUTPUT}
    ran = run_image(docker_client, sample_images[sample])
    assert ran == Ran(0, expected[sample], ""), ran


@pytest.mark.engine
def test_threads_image_holds_libgcc_s(docker_client, sample_images, tmp_path: Path) -> None:
    """glibc dlopens libgcc_s.so.1 to unwind a cancelled thread: it has to be there."""
    files = image_files(docker_client, sample_images["threads-cpp"], tmp_path)
    assert any(os.path.basename(path) == "libgcc_s.so.1" for path in files), sorted(files)


@pytest.mark.engine
def test_greet_keeps_its_private_library_next_to_it(
    docker_client, sample_images, tmp_path: Path
) -> None:
    """``$ORIGIN/lib``: the library and its SONAME link sit at the same relative path."""
    files = image_files(docker_client, sample_images["greet"], tmp_path)
    lib = "/app/lib"  # greet is /app/greet: a user's BINARY, its layout kept
    assert files[f"{lib}/libgreet.so.1"].issym()
    assert files[f"{lib}/libgreet.so.1"].linkname == "libgreet.so.1.0.0"
    assert files[f"{lib}/libgreet.so.1.0.0"].isfile()


# -- many host binaries in one image ----------------------------------------------------------


@dataclass(frozen=True)
class HostCommand:
    path: str
    args: tuple[str, ...]
    first_line_only: bool = False  # for output that depends on the user's files


HOST_COMMANDS = {
    "curl": HostCommand("/usr/bin/curl", ("--version",)),
    "openssl-version": HostCommand("/usr/bin/openssl", ("version",)),
    "openssl-dgst": HostCommand("/usr/bin/openssl", ("dgst", "-sha256")),  # stdin: empty
    "git": HostCommand("/usr/bin/git", ("--version",)),
    "gzip": HostCommand("/usr/bin/gzip", ("--version",)),
    "tar": HostCommand("/usr/bin/tar", ("--version",)),
    "ssh": HostCommand("/usr/bin/ssh", ("-V",)),  # prints on stderr
    "sqlite3": HostCommand("/usr/bin/sqlite3", (":memory:", "select sqlite_version(), 6*7;")),
    "xz": HostCommand("/usr/bin/xz", ("--version",)),
    "gpg": HostCommand("/usr/bin/gpg", ("--version",), first_line_only=True),
    "make": HostCommand("/usr/bin/make", ("--version",)),
    "find": HostCommand("/usr/bin/find", ("--version",)),
    "sed": HostCommand("/usr/bin/sed", ("--version",)),
    "grep": HostCommand("/usr/bin/grep", ("--version",)),
    "diff": HostCommand("/usr/bin/diff", ("--version",)),
    "ls": HostCommand("/usr/bin/ls", ("--version",)),
    # An error that names argv[0]: the same path in the image as on the host.
    "ls-missing": HostCommand("/usr/bin/ls", ("/nonexistent/scratchpack-test",)),
    "date": HostCommand("/usr/bin/date", ("-u", "-d", "@0")),
    "busybox": HostCommand(BUSYBOX, ("echo", "hello from busybox")),
}
MIN_HOST_BINARIES = 10


def _present(command: HostCommand) -> bool:
    return os.path.isfile(command.path) and os.access(command.path, os.X_OK)


@pytest.fixture(scope="module")
def host_binaries_image(module_tags: Tags) -> str:
    binaries = list(dict.fromkeys(c.path for c in HOST_COMMANDS.values() if _present(c)))
    assert len(binaries) >= MIN_HOST_BINARIES, f"only {binaries} are installed"
    return module_tags.build("host-binaries", *binaries)


def _clean(text: str, first_line_only: bool) -> str:
    lines = [line.rstrip() for line in text.rstrip().splitlines()]
    return "\n".join(lines[:1] if first_line_only else lines)


@pytest.mark.engine
def test_one_image_holds_many_host_binaries(docker_client, host_binaries_image: str) -> None:
    present = {c.path for c in HOST_COMMANDS.values() if _present(c)}
    assert len(present) >= MIN_HOST_BINARIES, sorted(present)
    config = docker_client.images.get(host_binaries_image).attrs["Config"]
    first = next(c.path for c in HOST_COMMANDS.values() if _present(c))
    assert config["Entrypoint"] == [first]


@pytest.mark.engine
@pytest.mark.parametrize("name", list(HOST_COMMANDS))
def test_host_binary_runs_as_on_the_host(docker_client, host_binaries_image: str, name: str):
    command = HOST_COMMANDS[name]
    if not _present(command):
        pytest.skip(f"{command.path} is not installed")
    host = subprocess.run(
        [command.path, *command.args],
        env=HOST_RUN_ENV,
        cwd="/",
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    ran = run_image(docker_client, host_binaries_image, command.args, entrypoint=[command.path])
    only_first = command.first_line_only
    assert (ran.exit_code, _clean(ran.stdout, only_first), _clean(ran.stderr, only_first)) == (
        host.returncode,
        _clean(host.stdout, only_first),
        _clean(host.stderr, only_first),
    )
    assert ran.stdout.strip() or ran.stderr.strip(), "no output at all"


# -- --include --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def include_sources(tmp_path_factory) -> dict[str, Path]:
    top = tmp_path_factory.mktemp("include")
    note = top / "note.txt"
    note.write_text("a data file\n")
    data = top / "data"
    (data / "sub").mkdir(parents=True)
    (data / "empty").mkdir()
    (data / "sub" / "a.txt").write_text("alpha\n")
    (data / "b.txt").write_text("bravo\n")
    (data / "b.txt").chmod(0o640)
    (data / "sub" / "link").symlink_to("a.txt")
    return {"note": note, "data": data}


@pytest.fixture(scope="module")
def include_image(module_tags: Tags, samples: Path, static_busybox, include_sources) -> str:
    return module_tags.build(
        "include",
        HELLO,
        "--include",
        f"{include_sources['note']}:/etc/note.txt",
        "--include",
        f"{include_sources['data']}:/srv/data",
        "--include",
        f"{static_busybox}:/opt/bb/busybox",
        # An ELF file without DEST goes under /app beside HELLO (their layout below
        # samples/ kept); its libraries must come along.
        "--include",
        str(THREADS.relative_to(REPO_ROOT)),
    )


def _busybox(client, image: str, *args: str, path: str = "/opt/bb/busybox") -> str:
    ran = run_image(client, image, args, entrypoint=[path])
    assert ran.exit_code == 0, ran
    return ran.stdout


@pytest.mark.engine
def test_include_data_file_and_directory(docker_client, include_image: str) -> None:
    assert _busybox(docker_client, include_image, "cat", "/etc/note.txt") == "a data file\n"
    found = _busybox(docker_client, include_image, "find", "/srv/data").split()
    assert sorted(found) == [
        "/srv/data",
        "/srv/data/b.txt",
        "/srv/data/empty",
        "/srv/data/sub",
        "/srv/data/sub/a.txt",
        "/srv/data/sub/link",
    ]
    assert _busybox(docker_client, include_image, "readlink", "/srv/data/sub/link") == "a.txt\n"
    assert _busybox(docker_client, include_image, "cat", "/srv/data/sub/link") == "alpha\n"
    modes = _busybox(docker_client, include_image, "stat", "-c", "%a %n", "/srv/data/b.txt")
    assert modes == "640 /srv/data/b.txt\n"


@pytest.mark.engine
def test_included_elf_keeping_its_path_runs(docker_client, include_image: str) -> None:
    ran = run_image(docker_client, include_image, entrypoint=["/app/threads-cpp/threads-cpp"])
    assert ran == Ran(0, THREADS_OUTPUT, ""), ran
    # The main binary still runs too.
    ran = run_image(docker_client, include_image)
    assert ran == Ran(0, HELLO_OUTPUT, ""), ran


@pytest.mark.engine
def test_included_elf_at_a_new_dest_gets_its_libraries(docker_client, tags: Tags, samples):
    """``--include SRC:DEST`` with an ELF file: "ELF files in it get their libraries too".

    threads-cpp needs libstdc++, libm and libgcc_s, which hello-world does not.
    """
    tag = tags.build("include-elf-dest", HELLO, "--include", f"{THREADS}:/opt/x/threads-cpp")
    ran = run_image(docker_client, tag, entrypoint=["/opt/x/threads-cpp"])
    assert ran == Ran(0, THREADS_OUTPUT, ""), ran


@pytest.mark.engine
def test_include_static_busybox_at_bin(docker_client, tags: Tags, samples, static_busybox):
    """``--include /bin/busybox:/bin/busybox`` puts busybox at /bin/busybox in the image."""
    tag = tags.build("include-bin", HELLO, "--include", f"{static_busybox}:/bin/busybox")
    ran = run_image(docker_client, tag, ["cat", "/etc/group"], entrypoint=["/bin/busybox"])
    assert ran.exit_code == 0, ran
    assert "nonroot:x:65532:" in ran.stdout


# -- users, NSS -------------------------------------------------------------------------------

WHOAMI_C = r"""
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static const char *try_create(const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/scratchpack-test", dir);
    int fd = open(path, O_CREAT | O_WRONLY | O_EXCL, 0600);
    if (fd < 0) return "cannot write";
    close(fd);
    unlink(path);
    return "ok";
}

int main(void) {
    uid_t uid = getuid();
    struct passwd *pw = getpwuid(uid);
    const char *home = getenv("HOME");
    printf("%u %s\n", (unsigned)uid, pw ? pw->pw_name : "?");
    printf("tmp: %s\n", try_create("/tmp"));
    printf("home %s: %s\n", home ? home : "?", home ? try_create(home) : "unset");
    return 0;
}
"""

LOOKUP_C = r"""
#include <arpa/inet.h>
#include <netdb.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

int main(void) {
    struct passwd *pw = getpwnam("nobody");
    if (pw == NULL) { puts("getpwnam(nobody) failed"); return 1; }
    printf("%u\n", (unsigned)pw->pw_uid);
    struct addrinfo hints, *res;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo("localhost", NULL, &hints, &res);
    if (rc != 0) { printf("getaddrinfo: %s\n", gai_strerror(rc)); return 2; }
    for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        char text[INET6_ADDRSTRLEN];
        const void *addr = ai->ai_family == AF_INET
            ? (const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr
            : (const void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
        inet_ntop(ai->ai_family, addr, text, sizeof text);
        puts(text);
    }
    freeaddrinfo(res);
    return 0;
}
"""


@pytest.fixture(scope="module")
def public_dir() -> Iterator[Path]:
    """A directory every user may enter (0755 up to /): pytest's tmp_path is 0700 above.

    The image keeps the host modes of the directories above a binary, so a binary
    under a 0700 directory could not be started by ``--user nonroot``.
    """
    directory = Path(tempfile.mkdtemp(prefix="scratchpack-test-", dir="/tmp"))
    directory.chmod(0o755)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.engine
def test_user_nonroot_runs_as_uid_65532(docker_client, tags: Tags, public_dir: Path) -> None:
    whoami = gcc(WHOAMI_C, public_dir / "whoami")
    tag = tags.build("user-nonroot", whoami, "--user", "nonroot")
    assert docker_client.images.get(tag).attrs["Config"]["User"] == "nonroot"
    ran = run_image(docker_client, tag)
    assert ran == Ran(0, f"{NONROOT_UID} nonroot\ntmp: ok\nhome /home/nonroot: ok\n", ""), ran


@pytest.fixture(scope="module")
def lookup_program(tmp_path_factory) -> Path:
    return gcc(LOOKUP_C, tmp_path_factory.mktemp("lookup") / "lookup")


@pytest.mark.engine
def test_passwd_and_hosts_lookups_inside_the_image(docker_client, tags: Tags, lookup_program):
    """getpwnam from the image's /etc/passwd, localhost from /etc/hosts through the image's
    nsswitch.conf. The container has no network (``network_mode="none"``: loopback only);
    its /etc/hosts is the one Docker writes into every container."""
    tag = tags.build("lookup", lookup_program)
    ran = run_image(docker_client, tag, network_disabled=False)
    assert ran.exit_code == 0, ran
    uid, *addresses = ran.stdout.splitlines()
    assert uid == str(NOBODY_UID)
    assert addresses, ran
    assert set(addresses) <= {"127.0.0.1", "::1"}, ran


@pytest.mark.engine
def test_verify_runs_a_lookup_program_like_docker_run_network_none(
    docker_client, tags: Tags, lookup_program
):
    """``--verify`` promises a run with no network; a program that resolves localhost
    works under ``docker run --network none`` (previous test), so it must pass --verify.

    engine.run also sets ``network_disabled=True``, which makes Docker leave the
    container's /etc/hosts empty: localhost no longer resolves.
    """
    tag = tags.new("verify-lookup")
    proc = scratchpack("build", *IN_ENGINE, lookup_program, "--verify", "", "-t", tag)
    assert proc.returncode == 0, describe(proc)
    assert image_exists(docker_client, tag)


# -- image configuration and contents ---------------------------------------------------------

CONFIG_ENV = ["A=b", 'Q=x y$z "quoted" back\\slash']
CONFIG_LABELS = {"org.example.name": "scratchpack test", "k": 'v "w" $x'}
CONFIG_WORKDIR = "/srv/app"
CONFIG_CMD = 'serve "b c" $HOME'


@pytest.fixture(scope="module")
def config_image(module_tags: Tags, samples: Path, tmp_path_factory) -> tuple[str, Path]:
    context = tmp_path_factory.mktemp("config") / "context"
    args: list[str] = [str(HELLO), "--context", str(context)]
    for pair in CONFIG_ENV:
        args += ["--env", pair]
    for key, value in CONFIG_LABELS.items():
        args += ["--label", f"{key}={value}"]
    args += ["--workdir", CONFIG_WORKDIR, "--expose", "8080/tcp", "--cmd", CONFIG_CMD]
    return module_tags.build("config", *args), context


@pytest.mark.engine
def test_image_config_is_exactly_what_was_asked(docker_client, config_image) -> None:
    tag, _ = config_image
    config = docker_client.images.get(tag).attrs["Config"]
    assert config["Env"] == [f"PATH={IMAGE_PATH}", *CONFIG_ENV]
    assert config["Labels"] == CONFIG_LABELS
    assert config["WorkingDir"] == CONFIG_WORKDIR
    assert config["ExposedPorts"] == {"8080/tcp": {}}
    assert config["Cmd"] == ["serve", "b c", "$HOME"]
    assert config["Entrypoint"] == [HELLO_IN_IMAGE]
    assert not config.get("User")


@pytest.mark.engine
def test_image_holds_only_the_planned_files(docker_client, config_image, tmp_path: Path):
    """No Dockerfile, no context prefix: exactly rootfs/, the owned trees and WORKDIR."""
    tag, context = config_image
    files = image_files(docker_client, tag, tmp_path)
    assert not [p for p in files if os.path.basename(p) == "Dockerfile"]
    assert not [p for p in files if p.split("/")[1] in ("rootfs", "owned")]
    plan = context_plan(context)
    made_by_workdir = {"/srv", "/srv/app"} - set(plan)
    assert set(files) - made_by_workdir == set(plan)
    assert files[HELLO_IN_IMAGE].isfile()
    assert files["/etc/passwd"].isfile()


@pytest.mark.engine
def test_image_files_have_the_planned_modes_and_owners(docker_client, config_image, tmp_path):
    """Every path keeps the type, mode, owner, size and link target the context gives it
    (the owned trees too: /home/nonroot is planned 0700, owned by nonroot)."""
    tag, context = config_image
    files = image_files(docker_client, tag, tmp_path)
    plan = context_plan(context)
    differences = {}
    for path, want in plan.items():
        member = files.get(path)
        if member is None:
            differences[path] = "missing"
            continue
        got = Planned(
            member_kind(member),
            stat.S_IMODE(member.mode) if not member.issym() else 0o777,
            member.uid,
            member.gid,
            member.size if member.isfile() else 0,
            member.linkname if member.issym() else None,
        )
        if got != want:
            differences[path] = f"planned {want}, image has {got}"
    assert not differences, "\n".join(f"{p}: {d}" for p, d in sorted(differences.items()))


@pytest.mark.engine
def test_tmp_is_world_writable_and_sticky(docker_client, config_image, tmp_path: Path) -> None:
    tag, _ = config_image
    tmp = image_files(docker_client, tag, tmp_path)["/tmp"]
    assert tmp.isdir()
    assert stat.S_IMODE(tmp.mode) == 0o1777, oct(tmp.mode)
    assert (tmp.uid, tmp.gid) == (0, 0)


@pytest.mark.engine
def test_env_and_label_values_with_a_newline(docker_client, tags: Tags, samples, tmp_path):
    """A Dockerfile cannot hold a newline in a value: the engine build refuses it clearly
    (instead of storing a literal backslash-n); the built-in writer keeps it exactly."""
    values = ("--env", "NL=line 1\nline 2", "--label", "note=one\ntwo")
    tag = tags.new("newline")
    proc = scratchpack("build", *IN_ENGINE, HELLO, *values, "-t", tag)
    assert_clear_error(proc, 2, "--env NL", "newline", "--engine none")
    assert not image_exists(docker_client, tag)
    archive = tmp_path / "newline.tar"
    proc = scratchpack("build", "--engine", "none", HELLO, *values, "-t", tag, "-o", str(archive))
    assert proc.returncode == 0, describe(proc)
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))[0]
        config = json.load(tar.extractfile(manifest["Config"]))["config"]
    assert config["Env"] == [f"PATH={IMAGE_PATH}", "NL=line 1\nline 2"]
    assert config["Labels"] == {"note": "one\ntwo"}


# -- --verify ---------------------------------------------------------------------------------


@pytest.mark.engine
def test_verify_passes(docker_client, tags: Tags, samples) -> None:
    tag = tags.new("verify-ok")
    proc = scratchpack("build", *IN_ENGINE, HELLO, "--verify", "", "--json", "-t", tag)
    assert proc.returncode == 0, describe(proc)
    result = json.loads(proc.stdout)
    assert result["verify"] == {"args": [], "exit_code": 0, "output": HELLO_OUTPUT}
    assert image_exists(docker_client, tag)


@pytest.mark.engine
def test_verify_failure_removes_the_image(docker_client, tags: Tags) -> None:
    false = shutil.which("false") or "/bin/false"
    tag = tags.new("verify-fail")
    proc = scratchpack("build", *IN_ENGINE, false, "--verify", "", "-t", tag)
    assert_clear_error(proc, 4, tag, "exited 1", "removed")
    assert not image_exists(docker_client, tag)


@pytest.mark.engine
def test_a_failed_verify_shows_the_end_of_its_output(
    docker_client, tags: Tags, static_busybox
) -> None:
    """The line that explains a failure is rarely the last one (nginx's ``[emerg] …``)."""
    tag = tags.new("verify-output")
    # The engine orders stdout and stderr only by when it read them: hence the pause.
    script = "for i in $(seq 1 30); do echo line $i; done; sleep 1; echo the cause >&2; exit 3"
    proc = scratchpack(
        "build", *IN_ENGINE, BUSYBOX, "-t", tag, "--verify", f"sh -c {shlex.quote(script)}"
    )
    assert proc.returncode == 4, describe(proc)
    lines = proc.stderr.splitlines()
    assert lines[0].startswith("scratchpack: ") and "exited 3" in lines[0], describe(proc)
    assert "its output ends" in lines[0], describe(proc)
    shown = [line.removeprefix("  | ") for line in lines[1:]]
    assert shown == [f"line {i}" for i in range(12, 31)] + ["the cause"], describe(proc)
    assert not image_exists(docker_client, tag)


@pytest.mark.engine
def test_a_verify_still_running_at_its_timeout_is_named_a_server(
    docker_client, tags: Tags, static_busybox
) -> None:
    tag = tags.new("verify-server")
    started = time.monotonic()
    proc = scratchpack(
        "build", *IN_ENGINE, BUSYBOX, "-t", tag, "--verify-timeout", "2",
        "--verify", "sh -c 'echo listening; exec sleep 60'",
    )  # fmt: skip
    assert time.monotonic() - started < 30, describe(proc)
    assert proc.returncode == 4, describe(proc)
    first, *rest = proc.stderr.splitlines()
    for words in ("still running", "after 2 s", "a server?", "--verify-timeout"):
        assert words in first, describe(proc)
    assert rest == ["  | listening"], describe(proc)
    assert not image_exists(docker_client, tag)


def test_verify_is_not_silently_skipped_by_the_writer(tmp_path: Path) -> None:
    """``--verify`` with the built-in writer (no engine to run the image in) must not
    report success for an image it never ran: /bin/false would fail it."""
    false = shutil.which("false") or "/bin/false"
    archive = tmp_path / "false.tar"
    proc = scratchpack(
        "build",
        false,
        "--engine",
        "none",
        "--output",
        archive,
        "--verify",
        "",
        "-t",
        "scratchpack-test/verify-writer:x",
    )
    assert proc.returncode != 0, describe(proc)
    assert "--verify" in proc.stderr, describe(proc)


# -- bad inputs -------------------------------------------------------------------------------


def assert_nothing_left(tmp_path: Path, context: Path) -> None:
    assert not context.exists(), sorted(p.name for p in context.iterdir())
    assert not list(tmp_path.glob(".scratchpack-*")), sorted(tmp_path.iterdir())


@pytest.mark.engine
def test_not_an_elf_file(docker_client, tags: Tags, tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("just text\n")
    context = tmp_path / "context"
    tag = tags.new("not-elf")
    proc = scratchpack("build", *IN_ENGINE, text, "-t", tag, "--context", context)
    assert_clear_error(proc, 2, str(text))
    assert not image_exists(docker_client, tag)
    assert_nothing_left(tmp_path, context)


@pytest.fixture
def program_missing_a_library(tmp_path: Path) -> Path:
    """A program whose DT_NEEDED libgone.so.1 was deleted after linking."""
    lib = gcc(
        "int gone(void) { return 7; }\n",
        tmp_path / "libgone.so.1",
        "-shared",
        "-fPIC",
        "-Wl,-soname,libgone.so.1",
    )
    program = gcc(
        "int gone(void);\nint main(void) { return gone(); }\n",
        tmp_path / "needs-gone",
        f"-L{tmp_path}",
        "-l:libgone.so.1",
    )
    lib.unlink()
    return program


@pytest.mark.engine
def test_missing_library(docker_client, tags: Tags, tmp_path: Path, program_missing_a_library):
    context = tmp_path / "context"
    tag = tags.new("missing-lib")
    proc = scratchpack(
        "build", *IN_ENGINE, program_missing_a_library, "-t", tag, "--context", context
    )
    assert_clear_error(proc, 1, str(program_missing_a_library), "libgone.so.1")
    assert not image_exists(docker_client, tag)
    assert_nothing_left(tmp_path, context)

    proc = scratchpack("build", *IN_ENGINE, program_missing_a_library, "-t", tag, "--allow-missing")
    assert proc.returncode == 0, describe(proc)
    assert "libgone.so.1" in proc.stderr, describe(proc)
    assert image_exists(docker_client, tag)


@pytest.mark.engine
@pytest.mark.parametrize("bad_tag", ["Bad:Tag:x", "UPPER/case"])
def test_invalid_tag(docker_client, tags: Tags, tmp_path: Path, samples, bad_tag: str) -> None:
    context = tmp_path / "context"
    proc = scratchpack("build", *IN_ENGINE, HELLO, "-t", bad_tag, "--context", context)
    assert_clear_error(proc, 2, "invalid tag", bad_tag)
    assert not image_exists(docker_client, bad_tag.lower())
    assert_nothing_left(tmp_path, context)
    # Refused before any work: before reading the binary, before asking for the engine.
    proc = scratchpack(
        "build",
        *IN_ENGINE,
        tmp_path / "does-not-exist",
        "-t",
        bad_tag,
        env={"DOCKER_HOST": UNREACHABLE_ENGINE},
    )
    assert_clear_error(proc, 2, "invalid tag", bad_tag)


def test_unreachable_engine(tmp_path: Path, samples) -> None:
    """``--engine docker`` with no engine: exit 3 naming DOCKER_HOST (``--engine auto``, the
    default, would fall back to the built-in writer instead)."""
    context = tmp_path / "context"
    proc = scratchpack(
        "build",
        *IN_ENGINE,
        HELLO,
        "-t",
        "scratchpack-test/unreachable:x",
        "--context",
        context,
        env={"DOCKER_HOST": UNREACHABLE_ENGINE},
    )
    assert_clear_error(proc, 3, "DOCKER_HOST", UNREACHABLE_ENGINE)
    assert_nothing_left(tmp_path, context)
    assert not list(REPO_ROOT.glob("unreachable*.tar"))


# -- --no-build ------------------------------------------------------------------------------


def test_no_build_writes_the_context_without_an_engine(tmp_path: Path, samples) -> None:
    context = tmp_path / "context"
    proc = scratchpack(
        "build", HELLO, "--no-build", "--context", context, env={"DOCKER_HOST": UNREACHABLE_ENGINE}
    )
    assert proc.returncode == 0, describe(proc)
    assert proc.stderr == "", describe(proc)
    assert {"Dockerfile", "rootfs"} <= {p.name for p in context.iterdir()}
    dockerfile = (context / "Dockerfile").read_text()
    assert "FROM scratch\n" in dockerfile
    assert f'ENTRYPOINT ["{HELLO_IN_IMAGE}"]' in dockerfile
    assert (context / "rootfs" / HELLO_IN_IMAGE.lstrip("/")).read_bytes() == HELLO.read_bytes()
    assert stat.S_IMODE((context / "rootfs" / "tmp").stat().st_mode) == 0o1777
    assert not list(tmp_path.glob(".scratchpack-*"))


def test_no_build_into_an_empty_directory(tmp_path: Path, samples) -> None:
    context = tmp_path / "context"
    context.mkdir()
    proc = scratchpack(
        "build", HELLO, "--no-build", "--context", context, env={"DOCKER_HOST": UNREACHABLE_ENGINE}
    )
    assert proc.returncode == 0, describe(proc)
    assert (context / "Dockerfile").is_file()
    assert (context / "rootfs").is_dir()


def _snapshot(directory: Path) -> dict[str, tuple[int, float, bytes | None]]:
    snapshot = {}
    for path in sorted(directory.rglob("*")):
        info = path.lstat()
        data = path.read_bytes() if path.is_file() else None
        snapshot[str(path.relative_to(directory))] = (info.st_mode, info.st_mtime, data)
    return snapshot


def test_no_build_refuses_a_non_empty_directory(tmp_path: Path, samples) -> None:
    context = tmp_path / "context"
    (context / "sub").mkdir(parents=True)
    (context / "keep.txt").write_text("mine\n")
    (context / "sub" / "Dockerfile").write_text("FROM nothing\n")
    before = _snapshot(context)
    proc = scratchpack(
        "build", HELLO, "--no-build", "--context", context, env={"DOCKER_HOST": UNREACHABLE_ENGINE}
    )
    assert_clear_error(proc, 2, str(context))
    assert _snapshot(context) == before
    assert not list(tmp_path.glob(".scratchpack-*"))


# -- size -------------------------------------------------------------------------------------


@pytest.mark.engine
def test_curl_image_is_no_bigger_than_its_closure(docker_client, tags: Tags) -> None:
    curl = "/usr/bin/curl"
    if not os.path.isfile(curl):
        pytest.skip(f"{curl} is not installed")
    proc = scratchpack("deps", "--json", curl)
    assert proc.returncode == 0, describe(proc)
    (closure,) = json.loads(proc.stdout)
    paths = [
        closure["path"],
        closure["interpreter"],
        *(lib["path"] for lib in closure["libraries"]),
    ]
    real = {os.path.realpath(path) for path in paths}
    closure_size = sum(os.path.getsize(path) for path in real)

    tag = tags.build("curl", curl)
    image_size = int(docker_client.images.get(tag).attrs["Size"])
    print(
        f"\ncurl: closure {closure_size} bytes in {len(real)} files, image {image_size} bytes "
        f"(ratio {image_size / closure_size:.4f})"
    )
    assert closure_size <= image_size <= 1.01 * closure_size
    ran = run_image(docker_client, tag, ["--version"])
    assert ran.exit_code == 0 and ran.stdout.startswith("curl "), ran
