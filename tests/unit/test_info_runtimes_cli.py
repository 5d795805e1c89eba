"""`docker info`'s runtimes and plugins and `docker version`'s components with the real
docker CLI against the API on 127.77.188.7: dockerd 20.10's names (its three runc runtimes,
runc the default), the emulation's versions where dockerd shows containerd's and runc's,
and only the drivers the emulation has. Skipped without the docker CLI."""

from __future__ import annotations

from served_api import DockerAt, served, worker_port

HOST, PORT = "127.77.188.7", worker_port()
docker = DockerAt(HOST, PORT)


def lines_with(text: str, *starts: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip().startswith(starts)]


def test_runtimes_and_versions_as_dockerd_lists_them() -> None:
    with served(HOST, PORT):
        shown = docker.ok("info")
        [runtimes, default] = lines_with(shown, "Runtimes:", "Default Runtime:")
        # dockerd 20.10 printed `io.containerd.runc.v2 io.containerd.runtime.v1.linux runc`
        # (the CLI prints them in Go's map order: any order)
        assert sorted(runtimes.split()[1:]) == [
            "io.containerd.runc.v2",
            "io.containerd.runtime.v1.linux",
            "runc",
        ]
        assert default == " Default Runtime: runc"
        assert lines_with(shown, "containerd version:", "runc version:") == [
            " containerd version: swarmlab",
            " runc version: swarmlab",
        ]
        # the drivers emulated, in dockerd's order (dockerd also lists ipvlan, macvlan and
        # the logging drivers that send logs away)
        assert lines_with(shown, "Network:", "Log:") == [
            "  Network: bridge host null overlay",
            "  Log: json-file local",
        ]
        components = docker.ok(
            "version", "--format", "{{range .Server.Components}}{{.Name}}={{.Version}} {{end}}"
        )
        assert components.split() == [
            "Engine=20.10.24-swarmlab",
            "containerd=1.6.20-swarmlab",
            "runc=1.1.5-swarmlab",
        ]
