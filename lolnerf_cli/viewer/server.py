"""The viser server of `lolnerf view` and the controls each connected browser gets.

Every browser gets its own `RenderState` (its own camera, identity, settings and worker threads) and
its own copy of the controls; the model and its latent table are shared read-only. The page is
served by viser from files inside its Python package: nothing is fetched from anywhere else."""

from __future__ import annotations

import contextlib
import errno
import getpass
import io
import ipaddress
import os
import socket
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import InputError, ParamError
from ..signals import interrupt_on_signals, restore_signals
from ..progress import Progress, Task
from .state import (MODES, PCA_RANGE, RENDERERS, Identities, Pose, RenderState, camera_of, join_all, pose_of_camera,
                    view_pose)

RESOLUTIONS = (32, 48, 64, 96, 128, 192, 256, 384, 512)
PREVIEWS = {"1/4": 0.25, "1/2": 0.5, "full": 1.0}
GRIDS = (64, 96, 128, 192, 256)
STATUS_EVERY_S = 0.1               # progress text in the page is refreshed at most this often
STOP_WAIT_S = 120.0                # on stop, how long a bake, frame or job in progress may take to finish
SAMPLE_SEED_STEP = 1


# ----------------------------------------------------------------------------------------- ports, URLs
def check_port(host: str, port: int) -> None:
    """One clear InputError when (host, port) cannot be listened on: a busy port, a host that is not
    an address of this machine."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ParamError("host", f"'{host}' is not an address of this machine ({exc.strerror})") from None
    family, _, _, _, addr = infos[0]
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)     # as the server itself binds
        s.bind(addr)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ParamError("port", f"port {port} on {host} is already in use (another program, or another "
                                     f"lolnerf view); choose a free one with {{port}}") from None
        if exc.errno == errno.EACCES:
            raise ParamError("port", f"port {port} on {host} needs more privileges; use a port above 1023") from None
        raise ParamError("host", f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    finally:
        s.close()


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def url_lines(host: str, port: int) -> list[str]:
    """What `lolnerf view` prints: the URL, and how to reach it from another machine."""
    machine = socket.gethostname()
    ssh = os.environ.get("SSH_CONNECTION", "").split()
    if len(ssh) >= 3:                      # logged in over ssh: the address the user reached us at
        machine = ssh[2]
    user = os.environ.get("USER") or getpass.getuser()
    if host in ("0.0.0.0", "::"):
        lines = [f"viewer: http://127.0.0.1:{port} (listening on all interfaces: also http://{machine}:{port})"]
    else:
        shown = f"[{host}]" if ":" in host else host
        lines = [f"viewer: http://{shown}:{port}"]
    if is_loopback(host):
        lines.append(f"from another machine: ssh -N -L {port}:127.0.0.1:{port} {user}@{machine}   "
                     f"then open http://127.0.0.1:{port} there")
    return lines


# ----------------------------------------------------------------------------------------- progress in the page
class PageProgress(Progress):
    """Progress of a long job shown in one browser: a progress bar and a line of text."""

    def __init__(self, bar, text, label: str):
        self.bar, self.text, self.label = bar, text, label

    def task(self, description: str, total: int | None = None):
        from contextlib import contextmanager

        page = self

        class _T(Task):
            done, last = 0, 0.0

            def advance(self, n: int = 1, **fields) -> None:
                self.done += n
                now = time.monotonic()
                if now - self.last < STATUS_EVERY_S and self.done != total:
                    return
                self.last = now
                extra = "  ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())
                page.bar.value = min(100.0, 100.0 * self.done / total) if total else 50.0
                page.text.content = f"{page.label}: {description} {self.done}" + (f"/{total}" if total else "") + \
                    (f"  {extra}" if extra else "")

        @contextmanager
        def cm():
            page.bar.visible = True
            page.bar.value = 0.0
            page.text.content = f"{page.label}: {description}"
            yield _T()

        return cm()


# ----------------------------------------------------------------------------------------- one browser
class ClientView:
    """The controls and render state of one connected browser."""

    def __init__(self, client, loaded, precision: str, ids: Identities, out: Path, invert_steps: int, mesh_grid: int):
        self.client, self.loaded, self.ids, self.out = client, loaded, ids, out
        self.invert_steps, self.mesh_grid = invert_steps, mesh_grid
        self._job: threading.Thread | None = None
        gui = client.gui
        self.status = gui.add_markdown("waiting for the first frame")
        self.state = RenderState(loaded, precision, ids, self._show, self._bake_news)
        st = self.state.settings
        with gui.add_folder("View"):
            self.mode = gui.add_dropdown("Mode", MODES, initial_value=st.mode)
            self.renderer = gui.add_dropdown("Renderer", RENDERERS, initial_value=st.renderer,
                                             hint="baked: ray-march a grid baked once per identity; exact: the network")
            res = sorted(set(RESOLUTIONS) | {st.resolution})
            self.resolution = gui.add_dropdown("Resolution", [str(r) for r in res], initial_value=str(st.resolution),
                                               hint="longer side of a sharp frame, pixels")
            self.preview = gui.add_dropdown("While moving", list(PREVIEWS), initial_value="1/2",
                                            hint="resolution of the frames drawn while the camera moves")
            rc = loaded.cfg.render
            main = rc.n_samples if rc.sampler == "proposal" else rc.n_coarse + rc.n_fine
            self.samples = gui.add_slider("Samples (exact)", 8, 256, 8, int(min(256, max(8, main))),
                                          hint="main-network samples per ray of the exact renderer")
            grids = sorted(set(GRIDS) | {self.state.default_grid})
            self.grid = gui.add_dropdown("Bake grid", [str(g) for g in grids], initial_value=str(self.state.default_grid),
                                         hint="voxels per axis of the baked grid (about the samples per ray of the baked renderer)")
            self.bake_text = gui.add_markdown("")
        with gui.add_folder("Identity"):
            k = ids.count
            self.index = gui.add_slider("Training image", 0, max(k - 1, 0), 1, 0)
            self.sample_btn = gui.add_button("Random sample")
            self.psi = gui.add_slider("Truncation psi", 0.0, 1.5, 0.05, 0.7,
                                      hint="samples: 0 is the mean identity, 1 the spread of the training identities")
            self.pca = [gui.add_slider(f"PCA {i + 1}", -PCA_RANGE, PCA_RANGE, 0.1, 0.0,
                                       hint="offset along this principal component of the latent table, in standard deviations")
                        for i in range(ids.n_pca)]
            self.pca_reset = gui.add_button("Reset PCA")
            self.set_a = gui.add_button("A = current identity")
            self.set_b = gui.add_button("B = current identity")
            self.mix = gui.add_slider("A <-> B", 0.0, 1.0, 0.01, 0.0)
            self.upload = gui.add_upload_button("Invert a photo", mime_type="image/*",
                                                hint="fit a latent to a photo (the network stays fixed)")
            self.progress = gui.add_progress_bar(0.0, visible=False)
            self.job_text = gui.add_markdown("")
            self.result_image = gui.add_image(np.zeros((8, 16, 3), np.uint8), label="photo | reconstruction",
                                              format="png", visible=False)
        with gui.add_folder("Save"):
            self.shot_btn = gui.add_button("Screenshot")
            self.mesh_btn = gui.add_button("Export mesh")
            self.camera_btn = gui.add_button("Save camera")
            self.saved = gui.add_markdown(f"files go to {out}/")
        self._wire()
        self.state.start()
        cam = client.camera
        cam.on_update(self._camera_moved)
        self._camera_moved(cam)

    # ------------------------------------------------------------------ wiring
    def _wire(self) -> None:
        s = self.state
        self.mode.on_update(lambda _: s.change_settings(mode=self.mode.value))
        self.renderer.on_update(lambda _: s.change_settings(renderer=self.renderer.value))
        self.resolution.on_update(lambda _: s.change_settings(resolution=int(self.resolution.value)))
        self.preview.on_update(lambda _: s.change_settings(preview_scale=PREVIEWS[self.preview.value]))
        self.samples.on_update(lambda _: s.change_settings(samples=int(self.samples.value)))
        self.grid.on_update(lambda _: s.change_settings(grid=int(self.grid.value)))

        def identity(**kw):
            s.change_identity(lambda st: [setattr(st, k, v) for k, v in kw.items()])

        self.index.on_update(lambda _: identity(source="index", index=int(self.index.value)))
        self.sample_btn.on_click(lambda _: identity(source="sample", seed=s.identity.seed + SAMPLE_SEED_STEP
                                                    if s.identity.source == "sample" else s.identity.seed))
        self.psi.on_update(lambda _: identity(source="sample", psi=float(self.psi.value)))
        for i, sl in enumerate(self.pca):
            sl.on_update(lambda _, i=i, sl=sl: s.change_identity(lambda st: st.pca.__setitem__(i, float(sl.value))))
        self.pca_reset.on_click(lambda _: [setattr(sl, "value", 0.0) for sl in self.pca])
        self.set_a.on_click(lambda _: self._set_endpoint("a"))
        self.set_b.on_click(lambda _: self._set_endpoint("b"))
        self.mix.on_update(lambda _: identity(source="mix", t=float(self.mix.value)))
        self.upload.on_upload(lambda _: self._start("photo", self._invert))
        self.shot_btn.on_click(lambda _: self._start("screenshot", self._screenshot))
        self.mesh_btn.on_click(lambda _: self._start("mesh", self._mesh))
        self.camera_btn.on_click(lambda _: self._start("camera", self._save_camera))

    def _set_endpoint(self, which: str) -> None:
        z, name = self.state.current_identity()
        self.state.change_identity(lambda st: (setattr(st, which, z), setattr(st, f"{which}_name", name)))
        self.job_text.content = f"{which.upper()} = {name}"

    def _camera_moved(self, cam) -> None:
        try:
            pose = Pose(tuple(float(v) for v in cam.wxyz), tuple(float(v) for v in cam.position), float(cam.fov),
                        float(cam.aspect))
        except Exception:  # noqa: BLE001 - the browser has not reported its camera yet
            return
        self.state.set_pose(pose)

    # ------------------------------------------------------------------ frames
    def _show(self, frame) -> None:
        st = self.state
        kind = "sharp" if frame.sharp else "preview"
        self.client.scene.set_background_image(frame.image, format="jpeg", jpeg_quality=92)
        self.status.content = (f"**{st.fps.fps():.1f} fps** · frame {frame.number} · {frame.camera.w}x{frame.camera.h} px "
                               f"{kind} · {frame.renderer} · {1000 * frame.seconds:.0f} ms  \n{frame.identity}")

    def _bake_news(self, message: str) -> None:
        self.bake_text.content = message

    # ------------------------------------------------------------------ jobs (one at a time per browser)
    def _start(self, what: str, fn: Callable[[], None]) -> None:
        if self._job is not None and self._job.is_alive():
            self._notify("busy", f"still working on the last request; {what} was not started", "yellow")
            return

        def run():
            try:
                fn()
            except InputError as exc:
                self.job_text.content = f"refused: {exc}"
                self._notify("refused", str(exc), "red")
            except Exception as exc:  # noqa: BLE001 - the server keeps running; the page says what failed
                self.job_text.content = f"{what} failed: {type(exc).__name__}: {exc}"
                self._notify(f"{what} failed", f"{type(exc).__name__}: {exc}", "red")
            finally:
                self.progress.visible = False

        self._job = threading.Thread(target=run, name=f"lolnerf-view-{what}", daemon=True)
        self._job.start()

    def _notify(self, title: str, body: str, color: str) -> None:
        try:
            self.client.add_notification(title, body, auto_close_seconds=10.0, color=color)
        except Exception:  # noqa: BLE001 - the browser may have gone
            pass

    def _offer(self, path: Path) -> None:
        """Save the file in the output folder (done) and offer it to the browser as a download."""
        try:
            self.client.send_file_download(path.name, path.read_bytes())
        except Exception:  # noqa: BLE001 - the browser may have gone; the file is on disk
            pass

    def _invert(self) -> None:
        from .jobs import invert_photo, store_upload

        up = self.upload.value
        path = store_upload(self.out, up.name, up.content)
        self.job_text.content = f"inverting {path.name}"
        res = invert_photo(self.loaded, path, self.out, self.invert_steps,
                           PageProgress(self.progress, self.job_text, path.name))
        self.state.change_identity(lambda st: (setattr(st, "source", "photo"), setattr(st, "photo", res.z),
                                               setattr(st, "photo_name", path.name)))
        eye, target = pose_of_camera(res.camera)
        try:
            self.client.camera.position = tuple(eye)
            self.client.camera.look_at = tuple(target)
        except Exception:  # noqa: BLE001 - a camera the browser refuses: keep the current one
            pass
        self.result_image.image = res.sheet
        self.result_image.visible = True
        self.job_text.content = (f"{path.name}: reconstruction PSNR {res.psnr:.2f} dB ({self.invert_steps} steps; "
                                 f"camera: {res.camera_source}); latent: {res.latent_path}")

    def _screenshot(self) -> None:
        from .jobs import save_screenshot

        self.state.wait_idle(timeout=120.0)
        frame = self.state.last_sharp or self.state.last
        if frame is None:
            raise InputError(None, "no frame has been drawn yet")
        path = save_screenshot(self.out, frame.image)
        self.saved.content = f"screenshot: {path}"
        self._offer(path)

    def _mesh(self) -> None:
        from .jobs import export_mesh

        z, name = self.state.current_identity()
        path, mesh = export_mesh(self.out, self.loaded, z, self.mesh_grid,
                                 PageProgress(self.progress, self.job_text, "mesh"))
        self.job_text.content = f"mesh of {name}: {len(mesh.vertices):,} vertices, {len(mesh.faces):,} faces"
        self.saved.content = f"mesh: {path}"
        self._offer(path)

    def _save_camera(self) -> None:
        from .jobs import save_camera

        pose = self.state.pose
        if pose is None:
            raise InputError(None, "the browser has not reported its camera yet")
        cam = camera_of(pose, self.state.settings.resolution)
        z, name = self.state.current_identity()
        ident = self.state.identity
        plain_row = ident.source == "index" and not any(ident.pca)
        path, latent, cmd = save_camera(self.out, cam, self.loaded, z, name, ident.index if plain_row else None)
        self.saved.content = f"camera: {path}" + (f" (identity: {latent})" if latent else "") + f"  \n`{cmd}`"
        self._offer(path)

    def busy(self) -> bool:
        """Whether a render thread or a job of this browser is still running."""
        return self.state.busy() or (self._job is not None and self._job.is_alive())

    def close(self, wait: float = 0.0) -> None:
        """Stop drawing; wait up to `wait` seconds for the render threads and a running job to finish."""
        self.state.close(wait)
        if wait > 0:
            join_all([self._job], wait)


# ----------------------------------------------------------------------------------------- the server
class Viewer:
    """A running `lolnerf view` server. `stop()` ends it."""

    def __init__(self, loaded, precision: str, host: str, port: int, out: Path, invert_steps: int, mesh_grid: int):
        import viser

        from ..views import read_view

        self.loaded, self.ids = loaded, Identities(loaded)
        with contextlib.redirect_stdout(io.StringIO()):      # viser's own banner: serve() prints the URL
            self.server = viser.ViserServer(host=host, port=port, label="lolnerf view", verbose=False)
        self.port = self.server.get_port()
        if port and self.port != port:      # viser moves to the next port when the asked one got busy meanwhile
            self.server.stop()
            raise ParamError("port", f"port {port} on {host} is already in use; choose a free one with {{port}}")
        self.clients: dict[int, ClientView] = {}
        self._gone: list[ClientView] = []      # disconnected browsers whose threads may still be finishing
        self._lock = threading.Lock()
        sc = self.server.scene
        sc.set_up_direction("+y")            # lolnerf's world is +Y up
        view = read_view(loaded.run.root)
        eye, target = view_pose(view)
        init = self.server.initial_camera
        init.position, init.look_at, init.up = tuple(eye), tuple(target), (0.0, 1.0, 0.0)
        init.fov = float(np.radians(view.fov))

        @self.server.on_client_connect
        def _connect(client) -> None:
            cv = ClientView(client, loaded, precision, self.ids, out, invert_steps, mesh_grid)
            with self._lock:
                self.clients[client.client_id] = cv

        @self.server.on_client_disconnect
        def _disconnect(client) -> None:
            with self._lock:
                cv = self.clients.pop(client.client_id, None)
                self._gone = [v for v in self._gone if v.busy()]     # only those still finishing something
                if cv is not None:
                    self._gone.append(cv)
            if cv is not None:
                cv.close()

    def stop(self) -> None:
        """Close every browser's view and wait for their threads (also of browsers already gone)."""
        with self._lock:
            views = list(self.clients.values()) + self._gone
            self.clients.clear()
            self._gone = []
        end = time.monotonic() + STOP_WAIT_S
        for cv in views:
            cv.close(wait=max(0.1, end - time.monotonic()))
        self.server.stop()


def serve(loaded, precision: str, host: str, port: int, out: Path, invert_steps: int, mesh_grid: int,
          announce: Callable[[str], None], ready: threading.Event | None = None,
          stop: threading.Event | None = None) -> None:
    """Run the viewer until Ctrl-C (or `stop` is set). Prints the URL lines through `announce`."""
    try:
        import viser  # noqa: F401
    except ImportError:
        raise InputError(None, "lolnerf view needs viser, part of the 'view' extra: pip install -e '.[view]'") from None
    if port:
        check_port(host, port)
    v = Viewer(loaded, precision, host, port, out, invert_steps, mesh_grid)

    old_handlers = interrupt_on_signals()          # Ctrl-C, `kill -INT` and SIGTERM stop the server
    try:
        for line in url_lines(host, v.port):
            announce(line)
        announce("Ctrl-C stops the server.")
        if ready is not None:
            ready.set()
        while stop is None or not stop.is_set():
            time.sleep(0.2)
    except KeyboardInterrupt:
        announce("stopped.")
    finally:
        v.stop()
        restore_signals(old_handlers)
