"""One Tandem window per user: a second launch asks the running one to come to the front, then exits 0.

The running app listens on a :class:`QLocalServer` (a Unix socket / named pipe private to the user).
A new launch first tries to connect: if someone answers, it sends ``activate`` and quits; if not, it
takes over the name (removing a socket left behind by a crashed instance) and listens itself.

Use from the GUI entry point::

    guard = claim_single_instance()
    if guard is None:        # another Tandem was activated
        return 0
    ...build the window...
    guard.attach(window)     # raise + focus the window on "activate"
"""

from __future__ import annotations

import getpass
import hashlib
import os

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtNetwork import QLocalServer, QLocalSocket

__all__ = ["ACTIVATE", "SingleInstanceGuard", "claim_single_instance", "default_key", "raise_window"]

ACTIVATE = b"activate\n"
_TIMEOUT_MS = 1000


def default_key() -> str:
    """A per-user server name (the socket lives in the temp folder, so it must not collide across users)."""
    try:
        user = getpass.getuser()
    except Exception:  # no user name in the environment
        user = str(os.getuid()) if hasattr(os, "getuid") else "user"
    digest = hashlib.sha1(f"{user}:{os.path.expanduser('~')}".encode()).hexdigest()[:12]
    return f"tandem-{digest}"


def raise_window(window) -> None:
    """Bring ``window`` to the front: un-minimize, show, raise, focus."""
    state = window.windowState()
    if state & Qt.WindowState.WindowMinimized:
        window.setWindowState((state & ~Qt.WindowState.WindowMinimized) | Qt.WindowState.WindowActive)
    if not window.isVisible():
        window.show()
    window.raise_()
    window.activateWindow()
    handle = window.windowHandle()
    if handle is not None:
        handle.requestActivate()


class SingleInstanceGuard(QObject):
    """The server side (``listen``) and the client side (``notify_running``) of the guard."""

    activated = Signal()

    def __init__(self, key: str | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.key = key or default_key()
        self._server: QLocalServer | None = None
        self._clients: list[QLocalSocket] = []
        self._window = None

    # -- second launch --------------------------------------------------------------------------
    def notify_running(self, timeout_ms: int = _TIMEOUT_MS) -> bool:
        """Tell a running instance to activate; True when one answered."""
        sock = QLocalSocket()
        sock.connectToServer(self.key)
        if not sock.waitForConnected(timeout_ms):
            return False
        sock.write(ACTIVATE)
        ok = sock.waitForBytesWritten(timeout_ms)
        sock.disconnectFromServer()
        if sock.state() != QLocalSocket.LocalSocketState.UnconnectedState:
            sock.waitForDisconnected(timeout_ms)
        return ok

    # -- first launch ---------------------------------------------------------------------------
    def listen(self) -> bool:
        """Become the running instance; a stale socket from a crashed run is removed first."""
        if self._server is not None and self._server.isListening():
            return True
        server = QLocalServer(self)
        server.setSocketOptions(QLocalServer.SocketOption.UserAccessOption)
        if not server.listen(self.key):
            if server.serverError() != QLocalSocket.LocalSocketError.AddressInUseError:
                return False
            QLocalServer.removeServer(self.key)  # nobody answered notify_running: the socket is stale
            if not server.listen(self.key):
                return False
        server.newConnection.connect(self._on_new_connection)
        self._server = server
        return True

    @property
    def is_listening(self) -> bool:
        return self._server is not None and self._server.isListening()

    def close(self) -> None:
        """Stop listening and drop the open connections (safe to call twice)."""
        for sock in self._clients:
            sock.blockSignals(True)
            sock.abort()
            sock.deleteLater()
        self._clients.clear()
        if self._server is not None:
            self._server.blockSignals(True)
            self._server.close()
            self._server.deleteLater()
            self._server = None

    def attach(self, window) -> None:
        """Raise and focus ``window`` whenever another launch asks for it."""
        self._window = window
        self.activated.connect(self._raise)

    def _raise(self) -> None:
        if self._window is not None:
            raise_window(self._window)

    def _on_new_connection(self) -> None:
        server = self._server
        while server is not None and server.hasPendingConnections():
            sock = server.nextPendingConnection()
            self._clients.append(sock)
            sock.readyRead.connect(self._on_ready_read)
            sock.disconnected.connect(self._on_disconnected)
            self._read(sock)

    def _on_ready_read(self) -> None:
        sock = self.sender()
        if isinstance(sock, QLocalSocket):
            self._read(sock)

    def _on_disconnected(self) -> None:
        sock = self.sender()
        if isinstance(sock, QLocalSocket) and sock in self._clients:
            self._read(sock)
            self._clients.remove(sock)
            sock.deleteLater()

    def _read(self, sock: QLocalSocket) -> None:
        while sock.canReadLine():
            line = bytes(sock.readLine().data())
            if line.strip() == ACTIVATE.strip():
                self.activated.emit()


def claim_single_instance(key: str | None = None) -> SingleInstanceGuard | None:
    """The guard, listening, for the first instance; None when a running one was activated instead.

    When the guard can neither reach a running instance nor listen, it still returns a guard (the app
    starts anyway: a second window is better than none).
    """
    guard = SingleInstanceGuard(key)
    if guard.notify_running():
        return None
    if not guard.listen() and guard.notify_running():  # lost a race with a launch at the same moment
        return None
    return guard
