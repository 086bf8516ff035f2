"""How the e2e node agent runs a pod's containers: from OCI images with runc,
or (the fallback) as local processes.

`RuncRuntime` is the kubelet's container runtime here: each image is an OCI
layout (as `scripts/images.sh` writes them: DIR/REPOSITORY holding the tag as
its ref), unpacked once with `umoci`; each container is `runc run` of a bundle
whose config.json the agent writes from the image's config and the pod's spec:
command and args (Kubernetes' rules over the image's entrypoint and cmd), env
(the image's, then the pod's), the user (`runAsUser`/`runAsGroup`, else the
image's `USER`; `runAsNonRoot` refuses root), `readOnlyRootFilesystem`,
capabilities (the container runtime's default set, minus `drop`, plus `add`),
`allowPrivilegeEscalation: false` as no_new_privs, the pod's volumes and
/etc/hosts as bind mounts, and the pod's name as hostname. Containers with a
read-only root share their image's unpacked root; the others get a copy.

Not there, because this machine cannot: cgroups (its cgroup hierarchy is in a
hybrid mode runc can only run without, so `resources` are not enforced and
the spec has neither a cgroup namespace nor `linux.resources`), and a network
namespace per pod (containers share the host's, each pod listening on its own
loopback address as before).

`ProcessRuntime` runs an image's executable (`--image NAME=PATH`) as a local
process in a mount namespace of its own, as the agent did before images.
"""

import json
import os
import re
import shutil
import signal
import subprocess


class ImageError(ValueError):
    """An image this node cannot run (a kubelet's ErrImagePull)."""


class ConfigError(ValueError):
    """A container whose spec cannot be met (a kubelet's CreateContainerConfigError)."""


def repository_and_tag(image):
    """`registry/path/name:tag` -> (name, tag); no tag is `latest`."""
    name = image.rsplit("/", 1)[-1].split("@")[0]
    repository, _, tag = name.partition(":")
    return repository, tag or "latest"


def expand(text, env):
    """`$(VAR)` as the kubelet expands it in command, args and env values."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), text)


class ProcessRuntime:
    """Each image names a local executable; containers are local processes."""

    def __init__(self, images, work):
        self.images = {}
        self.created_dirs = []
        # Copied into the node's own directory: a pod's volumes are mounted over
        # their paths (its /tmp is an emptyDir) and must not hide the program.
        for repository, path in images.items():
            target = os.path.join(work, "images", repository, os.path.basename(path))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(path, target)
            self.images[repository] = target

    def describe(self):
        return f"local processes of {sorted(self.images)}"

    def base_env(self, image):
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/root"}

    def start(self, pod, spec, env, volumes, log):
        repository, _ = repository_and_tag(spec["image"])
        if repository not in self.images:
            raise ImageError(f"image {spec['image']}: no local executable for `{repository}` (--image {repository}=PATH)")
        argv = [self.images[repository]] + [expand(a, env) for a in (spec.get("command") or [])[1:]] \
            + [expand(a, env) for a in spec.get("args") or []]
        mounts = [f"mount --bind {pod.hosts} /etc/hosts"]
        for m in spec.get("volumeMounts") or []:
            target = m["mountPath"]
            if not os.path.exists(target):
                os.makedirs(target, exist_ok=True)
                self.created_dirs.append(target)
            mounts.append(f"mount --bind {volumes[m['name']]} {target}" + (" && mount -o remount,bind,ro " + target if m.get("readOnly") else ""))
        script = " && ".join(mounts) + ' && exec "$@"'
        process = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh"] + argv,
                                   env=env, stdout=log, stderr=log, cwd=pod.dir, start_new_session=True)
        return process, " ".join(argv)

    def signal(self, process, handle, sig):
        os.killpg(process.pid, sig)

    def stop(self):
        for d in reversed(self.created_dirs):
            try:
                os.rmdir(d)
            except OSError:
                pass


# The capabilities a container runtime grants by default (containerd's and Docker's set).
DEFAULT_CAPABILITIES = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
                        "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
                        "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"]


class RuncRuntime:
    """Containers from OCI images, run by runc."""

    def __init__(self, layouts, work, shared=()):
        self.layouts = layouts
        self.work = work
        self.shared = list(shared)
        self.root = os.path.join(work, "runc")
        self.unpacked = {}
        self.serial = 0
        os.makedirs(self.root, exist_ok=True)

    def describe(self):
        return f"runc {subprocess.run(['runc', '--version'], capture_output=True, text=True).stdout.split()[2]} " \
               f"with the OCI images of {self.layouts}: {sorted(os.listdir(self.layouts))}"

    def image(self, image):
        """(rootfs, image config) of an image, unpacked on first use."""
        repository, tag = repository_and_tag(image)
        key = f"{repository}:{tag}"
        if key in self.unpacked:
            return self.unpacked[key]
        layout = os.path.join(self.layouts, repository)
        try:
            with open(os.path.join(layout, "index.json")) as f:
                index = json.load(f)
        except OSError:
            raise ImageError(f"image {image}: not on this node (no OCI layout {layout})")
        manifest = next((m for m in index.get("manifests", [])
                         if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag), None)
        if manifest is None:
            raise ImageError(f"image {image}: {layout} has no tag {tag}")
        blob = lambda digest: os.path.join(layout, "blobs", *digest.split(":", 1))
        with open(blob(manifest["digest"])) as f:
            config_digest = json.load(f)["config"]["digest"]
        with open(blob(config_digest)) as f:
            config = json.load(f).get("config", {})
        bundle = os.path.join(self.work, "images", f"{repository}-{tag}")
        if os.path.exists(bundle):
            shutil.rmtree(bundle)
        done = subprocess.run(["umoci", "unpack", "--image", f"{layout}:{tag}", bundle], capture_output=True, text=True)
        if done.returncode != 0:
            raise ImageError(f"image {image}: umoci unpack: {done.stderr.strip()}")
        self.unpacked[key] = (os.path.join(bundle, "rootfs"), config)
        return self.unpacked[key]

    def base_env(self, image):
        _, config = self.image(image)
        return dict(e.split("=", 1) for e in config.get("Env") or [] if "=" in e)

    @staticmethod
    def user(rootfs, config, pod_sc, sc):
        """(uid, gid) as the kubelet decides it, and whether runAsNonRoot holds."""
        uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
        gid = sc.get("runAsGroup", pod_sc.get("runAsGroup"))
        image_user = config.get("User") or "0"
        name, _, group = image_user.partition(":")
        if uid is None:
            if name.isdigit():
                uid = int(name)
            else:
                entry = next((line.split(":") for line in open(os.path.join(rootfs, "etc/passwd"))
                              if line.split(":")[0] == name), None)
                if entry is None:
                    raise ConfigError(f"the image's user {name} is not in its /etc/passwd")
                uid, gid = int(entry[2]), int(entry[3]) if gid is None else gid
        if gid is None:
            gid = int(group) if group.isdigit() else 0
        if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) and uid == 0:
            raise ConfigError("container has runAsNonRoot and image will run as root")
        return uid, gid

    @staticmethod
    def capabilities(sc):
        caps = sc.get("capabilities") or {}
        drop = {c.upper().removeprefix("CAP_") for c in caps.get("drop") or []}
        kept = [] if "ALL" in drop else [c for c in DEFAULT_CAPABILITIES if c.removeprefix("CAP_") not in drop]
        kept += [f"CAP_{c.upper().removeprefix('CAP_')}" for c in caps.get("add") or []]
        return sorted(set(kept))

    def start(self, pod, spec, env, volumes, log):
        rootfs, config = self.image(spec["image"])
        pod_sc = pod.obj["spec"].get("securityContext") or {}
        sc = spec.get("securityContext") or {}
        uid, gid = self.user(rootfs, config, pod_sc, sc)
        # Kubernetes: `command` replaces the entrypoint (and drops the cmd); `args` replaces the cmd.
        entrypoint, cmd = config.get("Entrypoint") or [], config.get("Cmd") or []
        command = [expand(a, env) for a in spec["command"]] if spec.get("command") else entrypoint
        args = [expand(a, env) for a in spec["args"]] if spec.get("args") else ([] if spec.get("command") else cmd)
        argv = command + args
        if not argv:
            raise ConfigError(f"no command: the image {spec['image']} has no entrypoint and the container none")
        caps = self.capabilities(sc)
        mounts = [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/etc/hosts", "type": "bind", "source": pod.hosts, "options": ["rbind", "rprivate", "ro"]},
        ]
        for m in spec.get("volumeMounts") or []:
            mounts.append({"destination": m["mountPath"], "type": "bind", "source": volumes[m["name"]],
                           "options": ["rbind", "rprivate", "ro" if m.get("readOnly") else "rw"]})
        # The e2e's own directory, where file sinks write what the test then reads:
        # a node's local disk, as a PersistentVolume would give it to a pod.
        for path in self.shared:
            mounts.append({"destination": path, "type": "bind", "source": path, "options": ["rbind", "rprivate", "rw"]})
        fs_group = pod_sc.get("fsGroup")
        runtime = {
            "ociVersion": "1.0.2",
            "process": {
                "terminal": False,
                "user": {"uid": uid, "gid": gid, "additionalGids": [fs_group] if fs_group is not None else []},
                "args": argv,
                "env": [f"{k}={v}" for k, v in env.items()],
                "cwd": config.get("WorkingDir") or "/",
                "capabilities": {k: caps for k in ("bounding", "effective", "permitted")},
                "noNewPrivileges": sc.get("allowPrivilegeEscalation") is False,
            },
            "root": {"path": rootfs, "readonly": bool(sc.get("readOnlyRootFilesystem"))},
            "hostname": pod.name[:63],
            "mounts": mounts,
            "linux": {
                "namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount")],
                "maskedPaths": ["/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
                                "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware"],
                "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
            },
        }
        self.serial += 1
        handle = f"{pod.name[:40]}-{spec['name']}-{self.serial}"
        bundle = os.path.join(pod.dir, "bundles", handle)
        os.makedirs(bundle, exist_ok=True)
        if not sc.get("readOnlyRootFilesystem"):
            # A writable root of its own, fresh at every start (the image's unpacked root is shared).
            writable = os.path.join(bundle, "rootfs")
            subprocess.run(["cp", "-a", rootfs, writable], check=True)
            runtime["root"]["path"] = writable
        with open(os.path.join(bundle, "config.json"), "w") as f:
            json.dump(runtime, f, indent=1)
        process = subprocess.Popen(["runc", "--root", self.root, "run", "--bundle", bundle, handle],
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=bundle, start_new_session=True)
        process.handle = handle
        return process, f"{' '.join(argv)} (image {spec['image']}, uid {uid}, runc container {handle})"

    def signal(self, process, handle, sig):
        # To the container's init only: runc would forward a signal sent to it as
        # well, and a JobManager takes a second SIGTERM as "leave at once".
        name = {signal.SIGTERM: "TERM", signal.SIGKILL: "KILL"}[sig]
        done = subprocess.run(["runc", "--root", self.root, "kill", handle, name], capture_output=True)
        if done.returncode != 0 and sig == signal.SIGKILL:
            os.killpg(process.pid, signal.SIGKILL)

    def stop(self):
        pass
