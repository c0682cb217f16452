"""HTTP clients for live carbon-intensity APIs: UK Carbon Intensity, Electricity Maps, WattTime.

Each client owns a ``requests.Session`` with a connect+read timeout and a urllib3 ``Retry``
(2 retries, exponential backoff) on connection errors, timeouts and 5xx. Every failure becomes a
:class:`GridError`. Secrets (tokens, passwords) are kept out of messages, logs and reprs.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, ReadTimeoutError
from urllib3.util.retry import Retry

from . import GridError, Reading, check_intensity, to_utc

#: 1 lb CO2/MWh = 453.592 g / 1000 kWh.
G_PER_KWH_PER_LBS_PER_MWH = 0.453592
DEFAULT_TIMEOUT_S = 5.0
RETRY_STATUSES = (500, 502, 503, 504)


def _timed_out(exc: requests.RequestException) -> bool:
    """Whether retries ran out because of timeouts (requests reports that as ConnectionError)."""
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, (ReadTimeoutError, ConnectTimeoutError))


class _HttpClient:
    """Shared plumbing: session, retries, timeout, JSON decoding and secret scrubbing."""

    name = "http"

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retries: int = 2,
        backoff_s: float = 0.1,
        live_window_s: float = 3600.0,
        secrets: tuple[str, ...] = (),
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.live_window_s = live_window_s
        self._secrets = tuple(s for s in secrets if s)
        retry = Retry(
            total=retries,
            connect=retries,
            read=retries,
            status=retries,
            backoff_factor=backoff_s,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=frozenset({"GET"}),
            raise_on_status=False,
        )
        self.session = requests.Session()
        adapter = HTTPAdapter(max_retries=retry)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r}, timeout_s={self.timeout_s})"

    def close(self) -> None:
        """Release the session's connections."""
        self.session.close()

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _fail(self, message: str) -> GridError:
        return GridError(self._scrub(f"{self.name}: {message}"))

    def _check_live(self, at: datetime | None) -> datetime:
        now = datetime.now(timezone.utc)
        if at is not None and abs(to_utc(at) - now) > timedelta(seconds=self.live_window_s):
            raise self._fail(
                f"the live API only gives the current value, not {to_utc(at).isoformat()}; "
                "use a TraceProvider for other times"
            )
        return now

    def _get(self, path: str, **kwargs: Any) -> requests.Response:
        url = f"{self.base_url}{path}"
        try:
            return self.session.get(url, timeout=(self.timeout_s, self.timeout_s), **kwargs)
        except requests.Timeout:
            raise self._fail(f"no answer from {url} within {self.timeout_s} s after retries; try later") from None
        except requests.RequestException as exc:
            if _timed_out(exc):
                raise self._fail(
                    f"no answer from {url} within {self.timeout_s} s after retries; try later"
                ) from None
            kind = type(exc).__name__
            raise self._fail(f"cannot reach {url} ({kind}) after retries; check the network or base_url") from None

    def _json(self, response: requests.Response) -> Any:
        url = response.url.split("?", 1)[0]
        if response.status_code >= 500:
            raise self._fail(f"{url} answered HTTP {response.status_code} after retries; try later")
        if response.status_code in (401, 403):
            raise self._fail(f"{url} refused the credentials (HTTP {response.status_code}); check them")
        if response.status_code >= 400:
            raise self._fail(f"{url} answered HTTP {response.status_code}; check the zone or region")
        try:
            return response.json()
        except ValueError:
            raise self._fail(f"{url} did not return valid JSON; the API may have changed") from None

    def _timestamp(self, text: object, fallback: datetime) -> datetime:
        if not isinstance(text, str):
            return fallback
        try:
            return to_utc(datetime.fromisoformat(text))
        except (ValueError, GridError):
            raise self._fail(f"time {text!r} in the response is not an aware ISO-8601 time") from None


class UKCarbonIntensityClient(_HttpClient):
    """National Grid ESO Carbon Intensity API (Great Britain only, no key)."""

    name = "uk-carbon-intensity"
    zone = "GB"

    def __init__(self, base_url: str = "https://api.carbonintensity.org.uk", **kwargs: Any) -> None:
        super().__init__(base_url, **kwargs)

    def intensity(self, zone: str, at: datetime | None = None) -> Reading:
        """``data[0].intensity.actual`` of ``GET /intensity``, or its forecast while actual is null."""
        if zone != self.zone:
            raise self._fail(f"only zone 'GB' is covered, not {zone!r}; use another provider")
        now = self._check_live(at)
        body = self._json(self._get("/intensity"))
        try:
            period = body["data"][0]
            values = period["intensity"]
            value = values["actual"] if values.get("actual") is not None else values["forecast"]
        except (KeyError, IndexError, TypeError, AttributeError):
            raise self._fail("the response lacks data[0].intensity; the API may have changed") from None
        return Reading(
            zone=zone,
            g_co2_per_kwh=check_intensity(value, where=self.name),
            at=self._timestamp(period.get("from"), now),
            source=self.name,
        )


class ElectricityMapsClient(_HttpClient):
    """Electricity Maps API v3 (header ``auth-token``)."""

    name = "electricity-maps"

    def __init__(
        self,
        base_url: str = "https://api.electricitymap.org",
        *,
        token: str,
        **kwargs: Any,
    ) -> None:
        super().__init__(base_url, secrets=(token,), **kwargs)
        self.session.headers["auth-token"] = token

    def intensity(self, zone: str, at: datetime | None = None) -> Reading:
        """``carbonIntensity`` of ``GET /v3/carbon-intensity/latest?zone=...``."""
        now = self._check_live(at)
        body = self._json(self._get("/v3/carbon-intensity/latest", params={"zone": zone}))
        if not isinstance(body, dict) or "carbonIntensity" not in body:
            raise self._fail("the response lacks carbonIntensity; the API may have changed")
        return Reading(
            zone=zone,
            g_co2_per_kwh=check_intensity(body["carbonIntensity"], where=self.name),
            at=self._timestamp(body.get("datetime"), now),
            source=self.name,
        )

    def forecast(self, zone: str, hours: int, *, at: datetime | None = None) -> list[Reading]:
        """The first ``hours`` points of ``GET /v3/carbon-intensity/forecast?zone=...`` (which
        starts now: ``at`` may only name the current hour)."""
        if at is not None and abs((to_utc(at) - datetime.now(timezone.utc)).total_seconds()) > 3600:
            raise self._fail("Electricity Maps forecasts start at the current hour; ask for now")
        body = self._json(self._get("/v3/carbon-intensity/forecast", params={"zone": zone}))
        points = body.get("forecast") if isinstance(body, dict) else None
        if not isinstance(points, list):
            raise self._fail("the response lacks a forecast list; the API may have changed")
        now = datetime.now(timezone.utc)
        try:
            return [
                Reading(
                    zone=zone,
                    g_co2_per_kwh=check_intensity(p["carbonIntensity"], where=self.name),
                    at=self._timestamp(p.get("datetime"), now),
                    source=self.name,
                )
                for p in points[:hours]
            ]
        except (KeyError, TypeError):
            raise self._fail("a forecast point lacks carbonIntensity; the API may have changed") from None


class WattTimeClient(_HttpClient):
    """WattTime API v3: marginal emissions (co2_moer), converted from lbs/MWh to g/kWh."""

    name = "watttime"

    def __init__(
        self,
        base_url: str = "https://api.watttime.org",
        *,
        username: str,
        password: str,
        regions: Mapping[str, str],
        **kwargs: Any,
    ) -> None:
        super().__init__(base_url, secrets=(password,), **kwargs)
        self._username = username
        self._password = password
        self.regions = dict(regions)
        self._token: str | None = None

    def _login(self) -> str:
        response = self._get("/login", auth=(self._username, self._password))
        body = self._json(response)
        token = body.get("token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise self._fail("login returned no token; check the account")
        self._token = token
        self._secrets = tuple({*self._secrets, token})
        return token

    def _authorized_get(self, path: str, params: Mapping[str, str]) -> requests.Response:
        token = self._token or self._login()
        response = self._get(path, params=params, headers={"Authorization": f"Bearer {token}"})
        if response.status_code == 401:  # token expired: log in again, once
            token = self._login()
            response = self._get(path, params=params, headers={"Authorization": f"Bearer {token}"})
        return response

    def intensity(self, zone: str, at: datetime | None = None) -> Reading:
        """First value of ``GET /v3/forecast?region=...&signal_type=co2_moer``, in g/kWh."""
        region = self.regions.get(zone)
        if region is None:
            raise self._fail(f"no WattTime region is mapped for zone {zone!r}; add it to regions")
        now = self._check_live(at)
        body = self._json(self._authorized_get("/v3/forecast", {"region": region, "signal_type": "co2_moer"}))
        try:
            point = body["data"][0]
            lbs_per_mwh = check_intensity(point["value"], where=self.name)
        except (KeyError, IndexError, TypeError):
            raise self._fail("the response lacks data[0].value; the API may have changed") from None
        meta = body.get("meta")
        units = meta.get("units", "lbs_co2_per_mwh") if isinstance(meta, dict) else "lbs_co2_per_mwh"
        if units != "lbs_co2_per_mwh":
            raise self._fail(f"unexpected units {units!r}; expected lbs_co2_per_mwh")
        return Reading(
            zone=zone,
            g_co2_per_kwh=lbs_per_mwh * G_PER_KWH_PER_LBS_PER_MWH,
            at=self._timestamp(point.get("point_time"), now),
            source=self.name,
        )
