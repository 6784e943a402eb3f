# SPDX-License-Identifier: GPL-3.0-or-later
"""HTTP client of the Neural Human server (API v1, docs/API.md): stdlib ``http.client`` + numpy, no bpy.

Every failure becomes a ``ServerError`` whose ``kind`` says what went wrong (server not running, wrong token, bad
input, out of memory, ...) and whose ``message`` is one line a user can act on. Arrays come back from ``.npz``
answers as plain numpy arrays. The token is sent as a bearer header and never appears in messages or logs.

A ``ServerClient`` holds no connection: every call opens its own, so one client may be used from several threads.
Proxies from the environment are not used (the server is normally on this machine).
"""

from __future__ import annotations

import http.client
import io
import ipaddress
import json
import logging
import socket
import ssl
import threading
import zipfile
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import numpy as np

from .errors import UserError

DEFAULT_URL = "http://127.0.0.1:8765"
API_VERSION = "v1"
TOKEN_FILE = "~/.config/neural-human/token"
MAX_RESPONSE_BYTES = 1 << 30  # 1 GiB: far above any frame or mesh the server sends
NPZ_TYPES = ("application/x-npz", "application/octet-stream")
SERVE_HINT = "Start it with `python -m server serve` or set the URL in the add-on preferences."

ERROR_KINDS = frozenset({
    "remote_not_allowed", "bad_url", "unreachable", "timeout", "auth", "api_version", "bad_input", "not_found",
    "busy", "out_of_memory", "server", "protocol", "cancelled",
    "io",  # a local file could not be written (the job runner's output folder)
})
TRANSIENT_KINDS = frozenset({"unreachable", "timeout", "busy"})  # worth retrying after a pause

log = logging.getLogger(__name__)


class ServerError(UserError):
    """A failed call. ``kind`` is one of ``ERROR_KINDS``; ``message`` one actionable line (also ``str(err)``);
    ``field`` the request field at fault (bad input), ``status`` the HTTP status and ``code`` the server's error
    code when the server answered."""

    def __init__(self, kind: str, message: str, field: str | None = None, status: int | None = None,
                 code: str | None = None):
        if kind not in ERROR_KINDS:
            raise ValueError(f"unknown ServerError kind {kind!r}; use one of {sorted(ERROR_KINDS)}")
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.field = field
        self.status = status
        self.code = code

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return (f"ServerError(kind={self.kind!r}, message={self.message!r}, field={self.field!r}, "
                f"status={self.status!r}, code={self.code!r})")

    @property
    def transient(self) -> bool:
        """True for failures that may go away by themselves (server restarting, busy): worth a retry."""
        return self.kind in TRANSIENT_KINDS


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1, ::ffff:127.x.x.x). Names are not resolved:
    any other name counts as remote, even if it happens to resolve to this machine."""
    host = host.strip().lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host == "localhost":
        return True
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        return False
    mapped = getattr(addr, "ipv4_mapped", None)
    return bool(addr.is_loopback or (mapped is not None and mapped.is_loopback))


def check_server_url(url: str, allow_remote: bool = False) -> str:
    """The normalised base URL (``scheme://host[:port][/prefix]``, no trailing slash, no ``/v1``) of a server URL
    typed by a user. ``localhost:8765`` gets ``http://``; only http and https are accepted; a host that is not
    loopback raises ``ServerError("remote_not_allowed")`` unless ``allow_remote`` (the add-on passes the user's
    preference AND Blender's online access)."""
    text = (url or "").strip()
    if not text:
        raise ServerError("bad_url", f"The server URL is empty: set it in the add-on preferences (default "
                          f"{DEFAULT_URL}).")
    if "://" not in text:
        text = "http://" + text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as err:
        raise ServerError("bad_url", f"The server URL {url!r} is not valid ({err}): use e.g. {DEFAULT_URL}.") from err
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ServerError("bad_url", f"The server URL {url!r} uses {scheme!r}: only http:// and https:// work "
                          f"(e.g. {DEFAULT_URL}).")
    host = parts.hostname
    if not host:
        raise ServerError("bad_url", f"The server URL {url!r} has no host: use e.g. {DEFAULT_URL}.")
    if parts.username is not None or parts.password is not None:
        raise ServerError("bad_url", "The server URL must not contain a user name or password: put the token in "
                          "the add-on preferences instead.")
    if parts.query or parts.fragment:
        raise ServerError("bad_url", f"The server URL {url!r} must not have a query or fragment (?... / #...): use "
                          f"e.g. {DEFAULT_URL}.")
    if not allow_remote and not is_loopback_host(host):
        raise ServerError("remote_not_allowed", f"The server URL points to another machine ({host}): the add-on only "
                          "talks to this computer (127.0.0.1 / localhost) unless 'Allow remote server' is on in the "
                          "preferences and Blender's 'Allow Online Access' is enabled.")
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    path = parts.path.rstrip("/")
    if path.endswith("/" + API_VERSION):  # a pasted ".../v1" means the server's root
        path = path[: -len(API_VERSION) - 1]
    return f"{scheme}://{netloc}{path}"


def _to_json_value(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (tuple, set, frozenset)):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def encode_json(payload: Any) -> bytes:
    """JSON bytes of a request made of dicts, lists, numbers and numpy arrays; NaN/inf are refused here (the
    server would only say "not valid JSON")."""
    try:
        return json.dumps(payload, default=_to_json_value, allow_nan=False, separators=(",", ":")).encode()
    except ValueError as err:
        raise ServerError("bad_input", "The request contains a NaN or infinite number: check the rig's pose, the "
                          "actor root and the camera for invalid values.") from err
    except TypeError as err:
        raise ServerError("bad_input", f"The request cannot be sent as JSON: {err}.") from err


def decode_npz(data: bytes, what: str = "answer") -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` (no pickles); a damaged file raises ``ServerError("protocol")``."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as err:
        raise ServerError("protocol", f"The server's {what} is not a readable .npz ({type(err).__name__}: {err}); "
                          "add-on and server may not match.") from err


class ServerClient:
    """Calls of API v1 on the server at ``url``. ``timeout`` is the total deadline of a call, from sending the
    request to the last byte of the answer (a render answers only when it is done, so it is the longest a call may
    wait; a server trickling bytes cannot stretch it); ``connect_timeout`` bounds opening the connection.
    ``interrupt()`` (from any thread) ends the calls in progress with ``ServerError("cancelled")``."""

    def __init__(self, url: str = DEFAULT_URL, token: str = "", timeout: float = 120.0, connect_timeout: float = 3.0,
                 allow_remote: bool = False, max_response_bytes: int = MAX_RESPONSE_BYTES):
        self.url = check_server_url(url, allow_remote)
        parts = urlsplit(self.url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._prefix = parts.path
        token = (token or "").strip()
        if any(ord(c) < 0x21 or ord(c) > 0x7E for c in token):
            raise ServerError("auth", "The token in the add-on preferences contains spaces or unusual characters: "
                              f"paste it again from {TOKEN_FILE}.")
        self._token = token
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout)
        self.max_response_bytes = int(max_response_bytes)
        self._inflight: dict[int, tuple[http.client.HTTPConnection, dict[str, bool]]] = {}
        self._inflight_lock = threading.Lock()

    def interrupt(self) -> None:
        """End every call in progress on this client now (their sockets are shut down): they raise
        ``ServerError("cancelled")``. Later calls are not affected."""
        with self._inflight_lock:
            calls = list(self._inflight.values())
        for conn, flags in calls:
            flags["cancelled"] = True
            _shut(conn)

    def __repr__(self) -> str:  # never shows the token
        return f"ServerClient({self.url!r}, token={'set' if self._token else 'none'})"

    # --- endpoints ---------------------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """``GET /v1/health``; raises ``ServerError("api_version")`` unless the server speaks API v1."""
        try:
            status = self._json("GET", "/health")
        except ServerError as err:
            if err.status == 404:
                raise ServerError("api_version", f"{self.url} has no /{API_VERSION}/health: it is not a Neural Human "
                                  f"server speaking API {API_VERSION} (add-on and server must be the same release).",
                                  status=404, code=err.code) from err
            raise
        version = status.get("api_version")
        if version != API_VERSION:
            raise ServerError("api_version", f"The server at {self.url} speaks API {version!r}, this add-on speaks "
                              f"{API_VERSION!r}: add-on and server must match; update the older one.")
        return status

    def actors(self) -> list[dict[str, Any]]:
        """``GET /v1/actors``: ``[{"id", "name", "frames", "body_model", "up_axis", "bounds", "loaded"}, ...]``."""
        actors = self._json("GET", "/actors").get("actors")
        if not isinstance(actors, list) or not all(isinstance(a, dict) and "id" in a for a in actors):
            raise self._protocol("/actors", "has no list of actors")
        return actors

    def skeleton(self, actor_id: str) -> dict[str, Any]:
        """Rest skeleton of an actor: ``joints`` (24,3) float64, ``parents`` list[int], ``names`` list[str],
        ``shapes`` (10,) float64, ``up_axis`` str."""
        path = f"/actors/{_seg(actor_id)}/skeleton"
        raw = self._json("GET", path)
        try:
            joints = np.asarray(raw["joints"], dtype=np.float64)
            shapes = np.asarray(raw["shapes"], dtype=np.float64)
            parents = [int(p) for p in raw["parents"]]
            names = [str(n) for n in raw["names"]]
            up_axis = str(raw.get("up_axis", "z"))
        except (KeyError, TypeError, ValueError) as err:
            raise self._protocol(path, f"is not a skeleton ({type(err).__name__}: {err})") from err
        if joints.ndim != 2 or joints.shape[1] != 3 or shapes.shape != (10,) or not (
                len(parents) == len(names) == len(joints)):
            raise self._protocol(path, f"has inconsistent shapes (joints {joints.shape}, {len(parents)} parents, "
                                 f"{len(names)} names, shapes {shapes.shape})")
        return {"joints": joints, "parents": parents, "names": names, "shapes": shapes, "up_axis": up_axis}

    def motion(self, actor_id: str) -> dict[str, Any]:
        """The captured motion: ``fps`` float, ``poses`` (N,72), ``shapes`` (N,10), ``Rh`` (N,3), ``Th`` (N,3)
        float64 arrays, and ``frames`` the raw list of bodies."""
        path = f"/actors/{_seg(actor_id)}/motion"
        raw = self._json("GET", path)
        try:
            frames = raw["frames"]
            out: dict[str, Any] = {"fps": float(raw["fps"]), "frames": frames}
            for key, width in (("poses", 72), ("shapes", 10), ("Rh", 3), ("Th", 3)):
                out[key] = np.asarray([f[key] for f in frames], dtype=np.float64).reshape(len(frames), width)
        except (KeyError, TypeError, ValueError) as err:
            raise self._protocol(path, f"is not a motion ({type(err).__name__}: {err})") from err
        return out

    def render(self, actor_id: str, body: Mapping[str, Any], camera: Mapping[str, Any],
               outputs: Iterable[str] = ("rgba", "depth"),
               appearance_frame: int | None = None) -> dict[str, np.ndarray]:
        """One frame: ``rgba`` float32 (H,W,4) and/or ``depth`` float32 (H,W), as asked in ``outputs``."""
        outputs = list(outputs)
        payload: dict[str, Any] = {"body": body, "camera": camera, "outputs": outputs}
        if appearance_frame is not None:
            payload["appearance_frame"] = int(appearance_frame)
        path = f"/actors/{_seg(actor_id)}/render"
        return self._npz("POST", path, payload, expect=outputs)

    def mesh(self, actor_id: str, body: Mapping[str, Any], voxel_size: float | None = None,
             colors: bool = True, appearance_frame: int | None = None) -> dict[str, np.ndarray]:
        """One posed mesh: ``vertices`` float32 (N,3), ``faces`` int32 (M,3), ``colors`` uint8 (N,3) if asked."""
        payload: dict[str, Any] = {"body": body, "colors": bool(colors)}
        if voxel_size is not None:
            payload["voxel_size"] = float(voxel_size)
        if appearance_frame is not None:
            payload["appearance_frame"] = int(appearance_frame)
        path = f"/actors/{_seg(actor_id)}/mesh"
        return self._npz("POST", path, payload, expect=["vertices", "faces"] + (["colors"] if colors else []))

    def create_job(self, actor_id: str, frames: list[Mapping[str, Any]], outputs: Iterable[str],
                   voxel_size: float | None = None, colors: bool | None = None,
                   appearance_frame: int | None = None) -> dict[str, Any]:
        """``POST /v1/jobs``; ``frames`` = ``[{"frame": n, "body": body, "camera": camera?}, ...]``. Returns the job
        status including ``id``."""
        payload: dict[str, Any] = {"actor": actor_id, "outputs": list(outputs), "frames": list(frames)}
        if voxel_size is not None:
            payload["voxel_size"] = float(voxel_size)
        if colors is not None:
            payload["colors"] = bool(colors)
        if appearance_frame is not None:
            payload["appearance_frame"] = int(appearance_frame)
        status = self._json("POST", "/jobs", payload)
        if not isinstance(status.get("id"), str) or not status["id"]:
            raise self._protocol("/jobs", "has no job id")
        return status

    def job(self, job_id: str) -> dict[str, Any]:
        """``GET /v1/jobs/{id}``: ``state``, ``done``, ``total``, ``eta_s``, ``errors``, ``frames_done``, ..."""
        path = f"/jobs/{_seg(job_id)}"
        status = self._json("GET", path)
        if not isinstance(status.get("state"), str) or not isinstance(status.get("frames_done", []), list):
            raise self._protocol(path, "is not a job status")
        return status

    def job_frame_bytes(self, job_id: str, n: int) -> bytes:
        """The npz bytes of a finished frame exactly as the server sent them (checked to be a readable npz)."""
        path = f"/jobs/{_seg(job_id)}/frames/{int(n)}"
        data = self._request("GET", path, None, accept=NPZ_TYPES[0], expect_types=NPZ_TYPES)
        decode_npz(data, f"frame {int(n)}")
        return data

    def job_frame(self, job_id: str, n: int) -> dict[str, np.ndarray]:
        """The arrays of a finished frame (``rgba``/``depth`` and/or ``vertices``/``faces``/``colors``)."""
        path = f"/jobs/{_seg(job_id)}/frames/{int(n)}"
        return self._npz("GET", path, None)

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        """``DELETE /v1/jobs/{id}``: the job stops between frames and keeps the finished ones."""
        return self._json("DELETE", f"/jobs/{_seg(job_id)}")

    def unload(self, actor_id: str) -> dict[str, Any]:
        """``POST /v1/actors/{id}/unload``: frees the actor's memory on the server."""
        return self._json("POST", f"/actors/{_seg(actor_id)}/unload")

    # --- transport -----------------------------------------------------------------------------------------------

    def _json(self, method: str, path: str, payload: Any = None) -> dict[str, Any]:
        data = self._request(method, path, payload, accept="application/json", expect_types=("application/json",))
        try:
            value = json.loads(data)
        except ValueError as err:
            raise self._protocol(path, "is not valid JSON") from err
        if not isinstance(value, dict):
            raise self._protocol(path, "is not a JSON object")
        return value

    def _npz(self, method: str, path: str, payload: Any, expect: Iterable[str] = ()) -> dict[str, np.ndarray]:
        data = self._request(method, path, payload, accept=NPZ_TYPES[0], expect_types=NPZ_TYPES)
        arrays = decode_npz(data, f"answer to /{API_VERSION}{path}")
        missing = [name for name in expect if name not in arrays]
        if missing:
            raise self._protocol(path, f"lacks {', '.join(missing)} (has {', '.join(sorted(arrays)) or 'nothing'})")
        return arrays

    def _protocol(self, path: str, what: str, status: int | None = None) -> ServerError:
        return ServerError("protocol", f"The answer of {self.url} to /{API_VERSION}{path} {what}: is this a Neural "
                           "Human server of the same release as the add-on?", status=status)

    def _connection(self) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(self._host, self._port, timeout=self.connect_timeout,
                                               context=ssl.create_default_context())
        return http.client.HTTPConnection(self._host, self._port, timeout=self.connect_timeout)

    def _request(self, method: str, path: str, payload: Any, accept: str, expect_types: tuple[str, ...]) -> bytes:
        """The body of a 2xx answer with one of ``expect_types``; any other outcome raises ``ServerError``."""
        full_path = f"{self._prefix}/{API_VERSION}{path}"
        body = encode_json(payload) if payload is not None else None
        headers = {"Accept": accept, "User-Agent": "neural-human-addon"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        conn = self._connection()
        flags = {"expired": False, "cancelled": False}
        watchdog = threading.Timer(self.timeout, _expire, args=(conn, flags))  # the call's total deadline
        watchdog.daemon = True
        with self._inflight_lock:
            self._inflight[id(conn)] = (conn, flags)
        try:
            try:
                conn.connect()  # under connect_timeout ...
            except TimeoutError as err:
                raise ServerError("timeout", f"The Neural Human server at {self.url} did not accept a connection "
                                  f"within {self.connect_timeout:g} s. {SERVE_HINT}") from err
            if conn.sock is not None:
                conn.sock.settimeout(self.timeout)  # ... then every read/write under timeout, the whole call too
            watchdog.start()
            if flags["cancelled"]:
                raise ConnectionAbortedError("interrupted")
            conn.request(method, full_path, body=body, headers=headers)
            resp = conn.getresponse()
            data = self._read_body(resp, full_path)
            ctype = (resp.getheader("Content-Type") or "").split(";")[0].strip().lower()
            self._check_flags(flags, method, path)
            log.debug("%s %s -> %d (%d bytes)", method, full_path, resp.status, len(data))
        except ServerError:
            raise
        except (OSError, http.client.HTTPException) as err:
            self._check_flags(flags, method, path)
            raise self._transport_error(err, method, path) from err
        finally:
            watchdog.cancel()
            with self._inflight_lock:
                self._inflight.pop(id(conn), None)
            conn.close()
        if not 200 <= resp.status < 300:
            raise self._http_error(resp.status, ctype, data, path)
        if ctype not in expect_types:
            raise self._protocol(path, f"has content type {ctype or 'none'!r}, expected {expect_types[0]}",
                                 resp.status)
        return data

    def _check_flags(self, flags: dict[str, bool], method: str, path: str) -> None:
        """ServerError when the call was interrupted or ran past its total deadline (its socket was shut down)."""
        if flags["cancelled"]:
            raise ServerError("cancelled", f"{method} /{API_VERSION}{path} was cancelled.")
        if flags["expired"]:
            raise ServerError("timeout", f"The Neural Human server at {self.url} did not finish answering {method} "
                              f"/{API_VERSION}{path} within {self.timeout:g} s (a big render on CPU can take long: "
                              "lower the resolution or raise the timeout).")

    def _transport_error(self, err: OSError | http.client.HTTPException, method: str, path: str) -> ServerError:
        """A failed connection or exchange as a ServerError saying what to check (most specific cases first)."""
        if isinstance(err, TimeoutError):
            return ServerError("timeout", f"The Neural Human server at {self.url} did not answer {method} "
                               f"/{API_VERSION}{path} within {self.timeout:g} s (a big render on CPU can take long: "
                               "lower the resolution or raise the timeout).")
        if isinstance(err, ssl.SSLError):
            return ServerError("unreachable", f"TLS with {self.url} failed ({err.reason or err}): check the URL "
                               "(http vs https) and the server's certificate.")
        if isinstance(err, socket.gaierror):
            return ServerError("unreachable", f"Cannot resolve the host of {self.url} ({err.strerror or err}): "
                               "check the server URL in the add-on preferences.")
        if isinstance(err, ConnectionRefusedError):
            return ServerError("unreachable", f"No Neural Human server at {self.url} (connection refused). "
                               f"{SERVE_HINT}")
        if isinstance(err, (ConnectionError, http.client.IncompleteRead, http.client.RemoteDisconnected)):
            return ServerError("unreachable", f"The connection to the Neural Human server at {self.url} was lost "
                               f"({type(err).__name__}); the server may have stopped or crashed. {SERVE_HINT}")
        if isinstance(err, http.client.HTTPException):
            return ServerError("protocol", f"{self.url} did not answer in HTTP ({type(err).__name__}): is this a "
                               "Neural Human server?")
        # network unreachable, no route to host, ...
        return ServerError("unreachable", f"Cannot reach the Neural Human server at {self.url} "
                           f"({err.strerror or err}). {SERVE_HINT}")

    def _read_body(self, resp: http.client.HTTPResponse, full_path: str) -> bytes:
        limit = self.max_response_bytes
        length = resp.getheader("Content-Length")
        too_big = ServerError("protocol", f"The answer of {self.url} to {full_path} is larger than "
                              f"{limit / 2**20:.0f} MiB: refused (ask for fewer pixels or a coarser mesh).")
        if length is not None and length.strip().isdigit() and int(length) > limit:
            raise too_big
        data = resp.read(limit + 1)
        if len(data) > limit:
            raise too_big
        return data

    def _http_error(self, status: int, ctype: str, data: bytes, path: str) -> ServerError:
        """Map an error answer (status + ``{"error": {"code", "message", "field"}}``) to a ServerError."""
        err: Any = None
        if ctype == "application/json":
            try:
                err = json.loads(data).get("error")
            except (ValueError, AttributeError):
                err = None
        if not isinstance(err, dict):
            return self._protocol(path, f"is HTTP {status} without the JSON error of the API", status)
        code = err.get("code") if isinstance(err.get("code"), str) else None
        field = err.get("field") if isinstance(err.get("field"), str) else None
        text = str(err.get("message") or code or f"HTTP {status}").strip().replace("\n", " ")
        if status in (401, 403):
            return ServerError("auth", f"The Neural Human server at {self.url} refused the token ("
                               f"{'missing' if not self._token else 'wrong'}): copy it from {TOKEN_FILE} on the "
                               "server's machine (also printed by `python -m server serve`) into the add-on "
                               "preferences.", field, status, code)
        if status == 404:
            return ServerError("not_found", text, field, status, code)
        if status == 503 and code == "out_of_memory":
            return ServerError("out_of_memory", f"The server ran out of GPU memory ({text}): lower the resolution "
                               "(or use a coarser mesh voxel size) or unload other actors, then retry.",
                               field, status, code)
        if status == 503:
            return ServerError("busy", f"The server is busy ({text}): retry in a moment.", field, status, code)
        if 400 <= status < 500:
            if field and not text.startswith(field):
                text = f"{field}: {text}"
            return ServerError("bad_input", text, field, status, code)
        return ServerError("server", f"The server failed ({code or status}): {text}. See the server's log.",
                           field, status, code)


def _shut(conn: http.client.HTTPConnection) -> None:
    """Shut a connection's socket down: a read or write blocked on it returns at once."""
    sock = conn.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _expire(conn: http.client.HTTPConnection, flags: dict[str, bool]) -> None:
    flags["expired"] = True
    _shut(conn)


def _seg(value: str) -> str:
    """One URL path segment (actor and job ids): anything odd is escaped, the server then refuses it cleanly."""
    return quote(str(value), safe="")
