"""Pre-signed Stripe request pools and the wrk runner used by benchmarks/ingest.py.

Every request is a distinct delivery signed in Python, before its round, with the
product's own `webhooks.providers.stripe.signature.sign`, so wrk spends nothing on HMACs during
the measurement and no event id repeats.

wrk's Lua gets the pool as a table, built by each wrk thread's init() from two files:
the body template and one "<id suffix> <Stripe-Signature>" line per request. The
bodies differ only in their ids, so request() rebuilds each one (byte-identical to the
body that was signed) from the template. Shipping full bodies instead (~100 MB per
round) made thread start-up take most of a second; wrk starts its clock only after the
last thread is up, so the first thread's head start inflated requests/s by several
per cent. Lua source literals are no option either: LuaJIT caps constants per chunk.
"""

from __future__ import annotations

import json
import math
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from string import Template
from typing import Any

from webhooks.providers.stripe.signature import sign

WEBHOOK_PATH = "/webhooks/stripe"
RESULT_PREFIX = "WRK_RESULT "
# Stands for the unique suffix of the event, session and payment intent ids.
_ID_TOKEN = "@@ID@@"
# Socket errors wrk reports besides HTTP statuses.
SOCKET_ERROR_KINDS = ("connect", "read", "write", "timeout")


def event_template(created: int) -> bytes:
    """A `checkout.session.completed` event as Stripe sends it (2-space indented JSON).

    Every id that is unique in real traffic holds `_ID_TOKEN`; the body is about 2 KB.
    """
    session: dict[str, Any] = {
        "id": f"cs_test_a1{_ID_TOKEN}",
        "object": "checkout.session",
        "after_expiration": None,
        "allow_promotion_codes": False,
        "amount_subtotal": 4900,
        "amount_total": 4900,
        "automatic_tax": {"enabled": False, "liability": None, "status": None},
        "billing_address_collection": "auto",
        "cancel_url": "https://shop.example.com/cart",
        "client_reference_id": None,
        "consent": None,
        "created": created,
        "currency": "usd",
        "customer": "cus_QbenchExample01",
        "customer_creation": "if_required",
        "customer_details": {
            "address": {
                "city": "Portland",
                "country": "US",
                "line1": "123 Example Street",
                "line2": None,
                "postal_code": "97201",
                "state": "OR",
            },
            "email": "jane.doe@example.com",
            "name": "Jane Doe",
            "phone": None,
            "tax_exempt": "none",
            "tax_ids": [],
        },
        "customer_email": None,
        "expires_at": created + 86_400,
        "invoice": None,
        "livemode": False,
        "locale": None,
        "metadata": {"order_id": "ord_10042", "cart_id": "cart_8f2a91"},
        "mode": "payment",
        "payment_intent": f"pi_3P{_ID_TOKEN}",
        "payment_link": None,
        "payment_method_types": ["card"],
        "payment_status": "paid",
        "shipping_details": None,
        "status": "complete",
        "submit_type": None,
        "subscription": None,
        "success_url": "https://shop.example.com/thanks?session_id={CHECKOUT_SESSION_ID}",
        "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        "ui_mode": "hosted",
        "url": None,
    }
    event = {
        "id": f"evt_1P{_ID_TOKEN}",
        "object": "event",
        "api_version": "2024-06-20",
        "created": created,
        "data": {"object": session},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": "checkout.session.completed",
    }
    return json.dumps(event, indent=2).encode()


class IdSequence:
    """Event-id suffixes unique across the whole run (all targets, rounds, warm-ups)."""

    def __init__(self) -> None:
        # A per-run token keeps ids unique even against a database reused between runs.
        self._token = secrets.token_hex(4)
        self._counter = count()

    def take(self, n: int) -> Iterator[bytes]:
        """The next `n` suffixes."""
        for _ in range(n):
            yield f"{self._token}{next(self._counter):010d}".encode()


@dataclass(frozen=True, slots=True)
class Pool:
    """The files wrk replays: one body template, one record file per wrk thread."""

    template: Path
    records: list[Path]

    def paths(self) -> list[Path]:
        """Every file of the pool, for clean-up."""
        return [self.template, *self.records]


def write_pool(
    directory: Path, name: str, ids: IdSequence, size: int, secret: str, threads: int
) -> Pool:
    """Sign `size` unique deliveries and deal them round-robin into one file per thread."""
    timestamp = int(time.time())
    template = event_template(timestamp)
    token = _ID_TOKEN.encode()
    pool = Pool(
        template=directory / f"{name}.template",
        records=[directory / f"{name}.{index}.pool" for index in range(threads)],
    )
    pool.template.write_bytes(template)
    files = [path.open("wb") for path in pool.records]
    try:
        for index, suffix in enumerate(ids.take(size)):
            # Sign the exact bytes the Lua side rebuilds from the same template.
            signature = sign(template.replace(token, suffix), secret, timestamp).encode()
            files[index % threads].write(b"%s %s\n" % (suffix, signature))
    finally:
        for handle in files:
            handle.close()
    return pool


def pool_size(seconds: float, rate: float) -> int:
    """Enough requests that a target serving `rate` per second never repeats one."""
    return max(1000, math.ceil(seconds * rate))


# The done() hook every benchmark's Lua ends with: the threads' counters and wrk's
# summary as one JSON line after RESULT_PREFIX, which WrkResult.from_json reads.
LUA_DONE = Template(r"""function done(summary, latency, requests)
  local sent, wrapped, duplicates, codes = 0, 0, 0, {}
  for _, thread in ipairs(threads) do
    sent = sent + thread:get("sent")
    wrapped = wrapped + thread:get("wrapped")
    duplicates = duplicates + thread:get("duplicates")
    for code, n in pairs(thread:get("non2xx")) do
      codes[code] = (codes[code] or 0) + n
    end
  end
  local parts = {}
  for code, n in pairs(codes) do
    parts[#parts + 1] = string.format('"%d":%d', code, n)
  end
  local e = summary.errors
  io.write(string.format(
    '$prefix{"requests":%.0f,"duration_us":%.0f,"sent":%.0f,"wrapped":%.0f,' ..
    '"duplicates":%.0f,"non2xx":{%s},"connect":%.0f,"read":%.0f,"write":%.0f,' ..
    '"timeout":%.0f,"p50_us":%.0f,"p99_us":%.0f,"max_us":%.0f}\n',
    summary.requests, summary.duration, sent, wrapped, duplicates,
    table.concat(parts, ","), e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
""").substitute(prefix=RESULT_PREFIX)

_LUA = Template(r"""-- Generated by benchmarks/loadgen.py: replays pre-signed deliveries.
local template_path = $template_path
local pool_paths = { $pool_paths }
local id_token = $id_token
local webhook_path = $webhook_path
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("pool_path", pool_paths[#threads])
end

function init(args)
  local f = assert(io.open(template_path, "rb"))
  local template = f:read("*a")
  f:close()
  -- pieces = template split at the id token; the odd slots get the suffix per request.
  pieces = {}
  local pos = 1
  while true do
    local first, last = string.find(template, id_token, pos, true)
    if not first then break end
    pieces[#pieces + 1] = string.sub(template, pos, first - 1)
    pieces[#pieces + 1] = false
    pos = last + 1
  end
  pieces[#pieces + 1] = string.sub(template, pos)
  suffixes, sigs = {}, {}
  for line in io.lines(pool_path) do
    local space = string.find(line, " ", 1, true)
    suffixes[#suffixes + 1] = string.sub(line, 1, space - 1)
    sigs[#sigs + 1] = string.sub(line, space + 1)
  end
  nxt, sent, wrapped, duplicates, non2xx = 1, 0, 0, 0, {}
end

local function body_for(suffix)
  local parts = {}
  for k, piece in ipairs(pieces) do
    parts[k] = piece or suffix
  end
  return table.concat(parts)
end

function request()
  if nxt > #sigs then
    -- Out of unique requests: repeat them, and say so (the run gets flagged).
    nxt = 1
    wrapped = wrapped + 1
  end
  local i = nxt
  nxt = i + 1
  sent = sent + 1
  local headers = {
    ["Content-Type"] = "application/json; charset=utf-8",
    ["Stripe-Signature"] = sigs[i],
    ["User-Agent"] = "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
  }
  return wrk.format("POST", webhook_path, headers, body_for(suffixes[i]))
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx[status] = (non2xx[status] or 0) + 1
  elseif string.find(body, "duplicate", 1, true) then
    duplicates = duplicates + 1
  end
end

$done
""")


def _lua_long_string(text: str) -> str:
    if "]==]" in text:
        raise ValueError(f"cannot quote {text!r} for Lua")
    return f"[==[{text}]==]"


def write_script(path: Path, pool: Pool) -> Path:
    """The wrk Lua script that replays `pool` (one record file per wrk thread)."""
    path.write_text(
        _LUA.substitute(
            template_path=_lua_long_string(str(pool.template)),
            pool_paths=", ".join(_lua_long_string(str(p)) for p in pool.records),
            id_token=_lua_long_string(_ID_TOKEN),
            webhook_path=_lua_long_string(WEBHOOK_PATH),
            done=LUA_DONE,
        )
    )
    return path


@dataclass(frozen=True, slots=True)
class WrkResult:
    """What one wrk run measured, as reported by the script's done() hook."""

    requests: int
    duration_s: float
    sent: int
    wrapped: int
    duplicates: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    non2xx: dict[int, int] = field(default_factory=dict)
    socket_errors: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_json(cls, line: str) -> WrkResult:
        """Parse the JSON object the Lua done() hook printed."""
        data = json.loads(line)
        return cls(
            requests=int(data["requests"]),
            duration_s=data["duration_us"] / 1e6,
            sent=int(data["sent"]),
            wrapped=int(data["wrapped"]),
            duplicates=int(data["duplicates"]),
            p50_ms=data["p50_us"] / 1000,
            p99_ms=data["p99_us"] / 1000,
            max_ms=data["max_us"] / 1000,
            non2xx={int(code): int(n) for code, n in data["non2xx"].items()},
            socket_errors={kind: int(data[kind]) for kind in SOCKET_ERROR_KINDS},
        )

    @property
    def accepted(self) -> int:
        """Responses with a 2xx status."""
        return self.requests - sum(self.non2xx.values())

    @property
    def accepted_per_s(self) -> float:
        """2xx responses per second of the run."""
        return self.accepted / self.duration_s if self.duration_s else 0.0

    @property
    def unanswered(self) -> int:
        """Requests written but not answered: in flight at the end, or lost to errors."""
        return max(0, self.sent - self.requests)

    def problems(self) -> list[str]:
        """Why this run should not be trusted as-is; empty when it is clean."""
        found = [f"{n}x HTTP {code}" for code, n in sorted(self.non2xx.items())]
        found += [f"{n} {kind} errors" for kind, n in self.socket_errors.items() if n]
        if self.wrapped:
            found.append(f"request pool exhausted {self.wrapped}x (ids repeated)")
        if self.duplicates:
            found.append(f"{self.duplicates} answered as duplicate")
        return found


class WrkError(RuntimeError):
    """wrk failed or printed no result line."""


def wrk_path() -> str | None:
    """The wrk executable, or None when it is not installed."""
    return shutil.which("wrk")


def run_wrk(
    url: str, script: Path, *, connections: int, threads: int, seconds: float, timeout_s: float
) -> WrkResult:
    """Run wrk against `url` for `seconds` and return what its done() hook reported."""
    command = [
        wrk_path() or "wrk",
        f"--threads={threads}",
        f"--connections={connections}",
        f"--duration={max(1, round(seconds))}s",
        # Long enough that slow answers land in the latency histogram rather than
        # vanishing into wrk's timeout counter, which would flatter p99.
        f"--timeout={timeout_s:g}s",
        f"--script={script}",
        url,
    ]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=seconds + 120)
    finally:
        if proc.poll() is None:  # interrupted or hung: never leave wrk behind
            proc.kill()
            proc.wait()
    for line in stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return WrkResult.from_json(line.removeprefix(RESULT_PREFIX))
    raise WrkError(f"wrk exited {proc.returncode} without a result:\n{stdout}\n{stderr}")
