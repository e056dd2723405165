"""Wires one site agent: local state, cache, models, the hub link and the inference server.

Start-up order matters for autonomy: credentials and the last good models come from the
state directory first, so the server answers from cache before the hub is even contacted.
Two background threads then follow the hub: one long-polls the desired state, the other
converges towards it, retries failures with back-off and sends heartbeats.

Everything the agent says to the hub (desired state, blobs, reports, telemetry, federated
tasks) goes through one :class:`HubSession` built here, once the credential is known: one
connection pool and one place for the hub's address, credential and (with TLS) certificates.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import stat
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from modelfleet._version import __version__
from modelfleet.errors import HubUnreachable, InsufficientStorage, InvalidInput, ModelfleetError
from modelfleet.loops import BackgroundLoop, Backoff
from modelfleet.pki.tls import ServerTlsFiles, TlsFiles
from modelfleet.registry.keyset import KeySet
from modelfleet.registry.signing import load_public_key
from modelfleet.settings import SiteSettings
from modelfleet.site.access import SiteAccess
from modelfleet.site.cache import BlobCache
from modelfleet.site.cascade import Cascade
from modelfleet.site.evaluation import EvaluationWorker
from modelfleet.site.federated import FederatedWorker, SiteConfig
from modelfleet.site.feedback import FeedbackStore
from modelfleet.site.floors import DesiredStateFloor
from modelfleet.site.hub_link import HubLink, Reachability
from modelfleet.site.identity import SiteIdentity, enroll_site, renew
from modelfleet.site.reconciler import Reconciler
from modelfleet.site.repository import ModelRepository
from modelfleet.site.server import InferenceServer
from modelfleet.site.spool import HubTelemetrySender, Shipper, Spool
from modelfleet.site.state import Credentials, SiteState
from modelfleet.site.storage import CACHE, StorageHealth, disk_full
from modelfleet.site.telemetry import TelemetryRecorder
from modelfleet.transport.session import HubSession
from modelfleet.yamlfile import load_yaml_file

log = logging.getLogger("modelfleet.site")

#: Bind addresses that name no host a certificate could carry.
_WILDCARD_HOSTS = frozenset({"0.0.0.0", "::"})  # noqa: S104 (compared with, never bound)


class SiteAgent:
    def __init__(
        self,
        settings: SiteSettings,
        *,
        hub_url: str | None = None,
        enrollment_token: str | None = None,
        re_enroll: bool = False,
    ) -> None:
        self.settings = settings
        self.started = time.monotonic()
        state_dir = Path(settings.state_dir)
        # What a full disk cost each store (site/storage.py): on /metrics and in reports.
        self.storage = StorageHealth()
        self._unsaved_desired: tuple[str, dict[str, Any]] | None = None
        # A start that gets no credential (a refused token, no hub, a CA that does not
        # match) leaves the state directory as it found it: no empty directory to trip on.
        with _restored_on_failure(state_dir):
            state_dir.mkdir(parents=True, exist_ok=True)
            state_dir.chmod(0o700)
            self.state = SiteState(state_dir / "state.db", self.storage)
            self.identity = SiteIdentity(state_dir)
            try:
                self.credentials = self._credentials(hub_url, enrollment_token, re_enroll)
            except BaseException:
                self.state.close()
                raise
        self.cache = BlobCache(state_dir / "cache")
        self.repository = ModelRepository()
        self.session = HubSession(
            self.credentials.hub_url, self.credentials.token, tls=self._hub_tls()
        )
        self._renewal_failures = 0
        self.link = HubLink(self.session, self.credentials.site, long_poll_s=settings.long_poll_s)
        self.reconciler = Reconciler(
            state=self.state,
            cache=self.cache,
            repository=self.repository,
            public_key=self._pinned_keys(),
            on_keys=self.identity.save_keys,
            download=self._download,
            floors=DesiredStateFloor.load(self.state, self.credentials.site),
            backoff=Backoff(max_s=settings.retry_max_s),
            intra_op_threads=settings.intra_op_threads,
            policy_file=settings.policy_file,
        )
        # Who may call: the saved grant list first, so a restart with the hub down authorises.
        self.access = SiteAccess(self.site, self._trusted_keys, self.identity.grants_file)
        self.access.load()
        self.telemetry: TelemetryRecorder | None = None
        self.shipper: Shipper | None = None
        if settings.telemetry_enabled:
            # Windows survive outages and restarts in the outbox; only sketches leave.
            self.spool = Spool(
                state_dir / "telemetry.db", max_bytes=settings.spool_max_bytes, health=self.storage
            )
            self.telemetry = TelemetryRecorder(
                self.spool.put,
                window_s=settings.telemetry_window_s,
                sample_requests=settings.telemetry_sample_requests,
            )
            self._sender = HubTelemetrySender(self.session, self.credentials.site)
            self.shipper = Shipper(
                self.spool,
                self._sender,
                interval_s=settings.telemetry_ship_interval_s,
                retry_max_s=settings.retry_max_s,
            )
        self.server = InferenceServer(
            self.repository,
            ready=lambda: self._restored,
            observer=self.telemetry,
            access=self.access,
            feedback=self._feedback_store(settings, state_dir),
        )
        self.server.stats.registry.register(self.storage)
        if settings.cascade_file is not None:
            # Counters land in the server's registry, so /metrics shows escalations.
            self.server.cascade = Cascade.from_config(
                load_yaml_file(Path(settings.cascade_file), "cascade file"),
                registry=self.server.stats.registry,
                # The pinned fleet CA verifies the target; this site's certificate is its
                # client certificate there.
                tls=self.identity.client() if self.tls else None,
            )
        self._restored = False
        self._desired: dict[str, Any] | None = None
        self._etag: str | None = None
        self.hub = Reachability(self.credentials.hub_url)
        # The poller's back-off while the hub is unreachable or refusing: 1 s doubling.
        self._backoff = Backoff(1.0, settings.retry_max_s, max_doublings=7)
        self._poll_failures = 0
        # Thread names as before (the loops' methods), which the logs show.
        self._poller = BackgroundLoop("_poll_loop", self._poll_once, interval_s=0.0, logger=log)
        self._worker = BackgroundLoop(
            "_work_loop",
            self._work_once,
            interval_s=self._next_wake,
            first_wait_s=self._next_wake,
            logger=log,
            join_timeout_s=5.0,
        )
        self._last_report = 0.0
        # Federated learning only with the site's own config file (consent, data sets).
        self.federated: FederatedWorker | None = None
        # Evaluations likewise: the same consent and data sets (site/evaluation.py).
        self.evaluation: EvaluationWorker | None = None
        if settings.config_file is not None:
            site_config = SiteConfig.load(Path(settings.config_file))
            self.federated = FederatedWorker(
                site_config,
                session=self.session,
                site=self.credentials.site,
                state_dir=state_dir,
                poll_s=settings.fl_poll_s,
                retry_max_s=settings.retry_max_s,
            )
            self.evaluation = EvaluationWorker(
                site_config,
                site=self.credentials.site,
                session=self.session,
                download=self.link.download,
                keys=self._trusted_keys,
                served=self.cache,
                cache_dir=state_dir / "evaluation-cache",
                policy_file=settings.policy_file,
                max_rows=settings.eval_max_rows,
                poll_s=settings.eval_poll_s,
                retry_max_s=settings.retry_max_s,
            )

    @property
    def site(self) -> str:
        return self.credentials.site

    @property
    def public_url(self) -> str:
        scheme = "https" if self.tls else "http"
        return self.settings.public_url or f"{scheme}://{self.settings.host}:{self.settings.port}"

    def _credentials(
        self, hub_url: str | None, enrollment_token: str | None, re_enroll: bool
    ) -> Credentials:
        saved = self.state.load_credentials()
        if enrollment_token:
            if not hub_url:
                raise InvalidInput("--hub is required with --enroll")
            if saved is not None and not re_enroll:
                # What was pinned at enrollment (CA, signing keys) is what protects this
                # site from a hostile hub; a token alone must not replace it.
                raise InvalidInput(
                    f"{self.settings.state_dir} is already enrolled as site {saved.site!r} "
                    f"with the hub at {saved.hub_url}; it keeps the CA and signing keys it "
                    "pinned then. Start it without --enroll, or add --re-enroll to replace "
                    "them with what this hub presents"
                )
            enrolled = enroll_site(hub_url, enrollment_token, self.identity, self._hosts())
            creds = Credentials(hub_url, enrolled.site, enrolled.token, enrolled.public_key)
            self.state.save_credentials(creds)
            # A new enrollment: the floor of an earlier one (another hub, or this hub
            # before a restore from backup) does not bind what this hub signs.
            DesiredStateFloor(self.state, enrolled.site).reset()
            pinned = "CA and signing keys" if enrolled.keys is not None else "hub key"
            log.info("enrolled as site %s; %s pinned", enrolled.site, pinned)
            return creds
        if saved is None:
            raise InvalidInput(
                f"{self.settings.state_dir} holds no site credential: enroll first with "
                "`modelfleet site serve --hub URL --enroll TOKEN --state-dir DIR`"
            )
        if hub_url and hub_url.rstrip("/") != saved.hub_url.rstrip("/"):
            if _scheme(hub_url) != _scheme(saved.hub_url):
                raise InvalidInput(
                    f"this site enrolled with {saved.hub_url}; --hub {hub_url} changes the "
                    "scheme, which only re-enrolling can do (--enroll TOKEN --re-enroll)"
                )
            saved = Credentials(hub_url, saved.site, saved.token, saved.public_key)
            self.state.save_credentials(saved)
        return saved

    def _pinned_keys(self) -> KeySet:
        """The signing keys pinned at enrollment (and rotated since), or the one hub key a
        state directory from before key sets holds."""
        pinned = self.identity.keys()
        if pinned is not None:
            return pinned
        try:
            return KeySet.of(load_public_key(self.credentials.public_key))
        except InvalidInput as exc:
            raise InvalidInput(
                f"{self.settings.state_dir} holds an unreadable hub key ({exc.message}); "
                "re-enroll this site (--enroll TOKEN --re-enroll)"
            ) from exc

    def _trusted_keys(self) -> KeySet:
        """The signing keys as the reconciler holds them now (rotations included)."""
        keys = self.reconciler.public_key
        return keys if isinstance(keys, KeySet) else KeySet.of(load_public_key(keys))

    def _hosts(self) -> tuple[str, ...]:
        """Host names for the site's certificate, so standard clients (curl --cacert,
        tritonclient) can check the address they dialled; fleet clients check the site's
        identity instead. Loopback is always there; a wildcard bind names no host."""
        hosts = ["localhost", "127.0.0.1"]
        for host in (self.settings.host, urlsplit(self.settings.public_url or "").hostname):
            if host and host not in _WILDCARD_HOSTS and host not in hosts:
                hosts.append(host)
        return tuple(hosts)

    @property
    def tls(self) -> bool:
        """Whether this site speaks TLS: it does once it holds a certificate from an HTTPS
        hub; a site of a hub run with ``--insecure-http`` has none and serves plain HTTP."""
        return _scheme(self.credentials.hub_url) == "https" and self.identity.exists()

    def _hub_tls(self) -> TlsFiles | None:
        if _scheme(self.credentials.hub_url) != "https":
            return None
        return self.identity.client()

    def server_tls(self) -> ServerTlsFiles | None:
        """The OIP server's certificate (the site's own), or None for plain HTTP."""
        return self.identity.server() if self.tls else None

    def _renew_if_due(self) -> None:
        """Renew the certificate two thirds into its life; after an outage as soon as the hub
        answers again. An expired one is dropped from the hub connection first (the handshake
        would fail), so the renewal goes with the site token."""
        if not self.tls:
            return
        now = datetime.now(UTC)
        try:
            if not self.identity.due(now):
                return
            if self.identity.not_after() <= now:
                self.session.reload(tls=self.identity.client(now))
            end = renew(self.session, self.site, self.identity)
        except ModelfleetError as exc:
            self._renewal_failures += 1
            level = logging.WARNING if self._renewal_failures in (1, 10) else logging.DEBUG
            log.log(level, "certificate renewal failed (%s); retrying", exc.message)
            return
        self._renewal_failures = 0
        log.info("site certificate renewed; valid until %s", end.isoformat(timespec="seconds"))

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> list[str]:
        """Restore cached models (no hub needed), then follow the hub in the background."""
        saved = self.state.load_desired()
        listed = None
        if saved is not None:
            self._etag, self._desired = saved
            listed = self.reconciler.listed(saved[1])
        restored = self.reconciler.restore(only=listed)
        self._restored = True
        self._poller.start()
        self._worker.start()
        if self.telemetry is not None and self.shipper is not None:
            self.telemetry.start()
            self.shipper.start()
        if self.federated is not None:
            self.federated.start()
        if self.evaluation is not None:
            self.evaluation.start()
        self._worker.wake()
        return restored

    def _feedback_store(self, settings: SiteSettings, state_dir: Path) -> FeedbackStore | None:
        """Labels joined with predictions (site/feedback.py); their counts ride in the
        telemetry windows, so without telemetry there is nowhere to put them."""
        if not settings.feedback_enabled or self.telemetry is None:
            return None
        store = FeedbackStore(
            state_dir / "feedback.db",
            self.telemetry.add_feedback,
            window_s=settings.feedback_window_s,
            max_per_model=settings.feedback_max_predictions,
        )
        store.start()
        return store

    def stop(self) -> None:
        """Stop following the hub. The poller may sit in a long-poll: it is a daemon thread
        and exits when that returns, so only the worker (which writes state) is joined."""
        self._poller.stop(join=False)
        self._worker.stop()
        if self.server.feedback is not None:
            self.server.feedback.close()  # writes the remembered predictions first
        if self.telemetry is not None and self.shipper is not None:
            self.telemetry.stop()  # closes the open windows into the outbox
            self.shipper.stop()
            self.spool.close()
        if self.federated is not None:
            self.federated.stop()
        if self.evaluation is not None:
            self.evaluation.stop()
        self.session.close()
        self.state.close()

    def _poll_once(self) -> float:
        """One desired-state long-poll (the poll itself is the wait between passes); answers
        the back-off after a failure, else no wait."""
        try:
            result = self.link.desired_state(self._etag)
        except ModelfleetError as exc:
            if self._poller.stopping:  # the agent is stopping (and closed the session)
                return 0.0
            self._poll_failures += 1
            if isinstance(exc, HubUnreachable):
                self.hub.failed(exc.message)
            else:
                self.hub.refused(exc.message)
            return self._backoff.delay(self._poll_failures)
        self._poll_failures = 0
        self.hub.accepted()
        if self.hub.answered():
            if self.shipper is not None:
                self.shipper.wake()  # deliver the backlog now
            self._worker.wake()  # report at once after an outage
        if result is not None and not self._poller.stopping:
            # Grants first, here: a revoked token stops working without waiting for a
            # reconcile pass (which may be busy downloading). A list signed by a key the
            # reconciler has yet to accept is taken again after that pass.
            self.access.accept(result[1].get("grants"))
            self._etag, self._desired = result
            if self.reconciler.verifies(result[1]):  # a refused one is reported, not kept
                self._save_desired(result)
            self._worker.wake()
        return 0.0

    def _work_once(self) -> None:
        """Reconcile with the last desired state, then report if anything changed or the
        report interval passed; woken by the poller, else after :meth:`_next_wake`."""
        self._renew_if_due()
        self._save_desired()  # one a full disk refused earlier
        changed = False
        if self._desired is not None:
            try:
                changed = self.reconciler.apply(self._desired)
                self.access.accept(self._desired.get("grants"))
            except Exception:  # keep serving whatever happens in one pass
                log.exception("reconcile pass failed")
        now = time.monotonic()
        due = changed or now - self._last_report >= self.settings.report_interval_s
        if due and self._report():
            self._last_report = now

    def _save_desired(self, result: tuple[str, dict[str, Any]] | None = None) -> None:
        """Keep the desired state for a restart. On a full disk it stays pending (served
        from memory meanwhile; the state counted the failed write) and the worker writes it
        again on each pass until space returns."""
        if result is not None:
            self._unsaved_desired = result
        pending = self._unsaved_desired
        if pending is None:
            return
        try:
            self.state.save_desired(*pending)
        except InsufficientStorage:
            return
        if self._unsaved_desired is pending:
            self._unsaved_desired = None

    def _download(self, url_path: str, partial: Path, size: int) -> None:
        """A blob into the model cache; a full disk there becomes :class:`InsufficientStorage`
        (counted once per download attempt): the activation fails, the current version keeps
        serving, and the retry resumes from the bytes on disk."""
        try:
            self.link.download(url_path, partial, size)
        except OSError as exc:
            if not disk_full(exc):
                raise
            self.storage.full(CACHE, str(self.cache.root))
            raise InsufficientStorage(
                f"disk full at the model cache {self.cache.root}: download not stored; "
                "retried when space returns"
            ) from exc
        self.storage.ok(CACHE)

    def _next_wake(self) -> float:
        wait = self.settings.report_interval_s
        now = time.monotonic()
        for status in self.reconciler.statuses.values():
            if status.state == "failed":
                wait = min(wait, max(0.05, status.next_try - now))
        return wait

    def _report(self) -> bool:
        body = {
            "agent_version": __version__,
            "uptime_s": round(time.monotonic() - self.started, 1),
            "url": self.public_url,
            "applied_revision": self.reconciler.applied_revision,
            "desired_state_refused": self.reconciler.floors.refusal,
            "models": self.reconciler.report_models(),
            "storage": self.storage.report(),
        }
        try:
            self.link.report(body)
        except ModelfleetError as exc:
            log.debug("report not delivered: %s", exc.message)
            return False
        return True


@contextlib.contextmanager
def _restored_on_failure(path: Path) -> Iterator[None]:
    """On an exception, undo what the block did to directory ``path``: remove it (and the
    parents it needed) if it did not exist, else remove the entries it did not hold and
    give it back its mode. Only for the steps before a credential exists: once a token is
    spent, what it bought must stay."""
    missing: list[Path] = []
    walk = path.absolute()
    while not walk.exists() and walk != walk.parent:
        missing.append(walk)
        walk = walk.parent
    held = None if missing else {entry.name for entry in path.iterdir()}
    mode = None if missing else stat.S_IMODE(path.stat().st_mode)
    try:
        yield
    except BaseException:
        if missing:
            shutil.rmtree(missing[-1], ignore_errors=True)
        elif held is not None and mode is not None:
            for entry in path.iterdir():
                if entry.name in held:
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
            path.chmod(mode)
        raise


def _scheme(url: str) -> str:
    return urlsplit(url).scheme.lower()
