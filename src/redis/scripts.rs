//! The Lua scripts: every change to a record is one of them, so each
//! transition is one atomic step on the server (rule 25).
//!
//! # The record
//!
//! One Redis hash per idempotency key, at `{prefix}:{<encoded key>}`. All of
//! a key's state is in that one Redis key, so every script touches one hash
//! slot (Redis Cluster); the hash tag keeps it so should a key ever grow a
//! second Redis key. Its fields:
//!
//! | field | meaning |
//! | --- | --- |
//! | `m` | `idemstore/1`: written by this store. A key under the prefix without it (another type, or a hash without the field) is *foreign*, and every script answers `{'foreign', type}` and changes nothing |
//! | `s` | the state: `f` in flight, `c` completed, `a` released (absent, kept only for its token) |
//! | `t` | the last fencing token handed out for this key |
//! | `id` | the claim id of the owner (`f`) or of the claim that completed (`c`) |
//! | `fp` | the claim's fingerprint, 32 hex digits, or empty for none |
//! | `d` | server time in ms: the lease deadline (`f`) or the expiry (`c`) |
//! | `v` | the stored value (`c` only) |
//!
//! Time is the server's `TIME` (allowed in scripts since Redis 5, as they
//! replicate their effects, not their code), never a replica's clock.
//! Expiry is derived, never stored: `c` past `d` reads as absent, `f` past
//! `d` as *lapsed* (claimable; a new claim takes it over).
//!
//! # Transitions
//!
//! ```text
//!             CLAIM (absent, released, expired or lapsed): t = max(t + 1, now_us)
//!   absent ────────────────────────────────────────────────► f{t, id, fp, d = now + lease}
//!     ▲   ◄──── ABANDON(t, id) / REMOVE ─────────────────────┘   │  ▲
//!     │                                     RENEW(t, id): d = now + lease
//!     │                                                          │
//!     │                         COMPLETE(t, id): d = now + ttl   ▼
//!     └──── REMOVE, or d passes ─────────────────────────── c{t, id, fp, d, v}
//! ```
//!
//! * `CLAIM(id, fp, lease)`: completed -> the value (one round trip for a
//!   replay), or `mismatch`; in flight -> `owner` again if `id` is this
//!   claim's own (a claim retried after a lost reply recognises itself),
//!   else `mismatch` or `flight{t, lease left}`; otherwise a new flight.
//!   Fingerprints are checked in every state, and only when both sides have
//!   one (rule 5).
//! * `COMPLETE(t, id, v, ttl)`, `RENEW(t, id)`, `ABANDON(t, id)`: only while
//!   `t` and `id` are the record's own (rule 10: a stale owner is refused).
//!   A completion already applied answers 1 again (a retried completion).
//!   COMPLETE and ABANDON publish the record's key on the store's channel.
//! * `REMOVE`: whatever the state -> released; publishes if it was in flight.
//! * `READ(fp)`: no change; the state, for `get` and waiters.
//!
//! # Tokens
//!
//! A token is `max(t + 1, now_us)`: one more than the record's last, or the
//! server's time in microseconds if that is larger. While a record exists
//! its `t` only grows, whatever the clock does. The record outlives its
//! state by a grace period (its `PEXPIRE` is the deadline plus the grace),
//! so a takeover, a re-claim after expiry or removal within the grace sees
//! the last token. Once the record is gone, the token comes from the clock,
//! larger than every earlier token of the key as long as the server's clock
//! has not gone back by more than the grace (a failover to a replica whose
//! clock is behind, or a clock step) -- the one case where rule 10 rests on
//! the clock. Tokens stay below 2^53, exact in Lua's numbers.

/// Opens every script: reads the clock and the record, refuses a foreign
/// key, and derives the live state (`a`, `f`, `x` lapsed, `c`).
///
/// The record is read with one `HGETALL` (the value with it, so a replay
/// needs no second read): an empty answer is an absent key, an error one
/// of another type, named by a `TYPE` on that path only. Each command a
/// script runs costs the server about as much as a whole `SET`, so the
/// scripts run as few as they can.
macro_rules! prelude {
    () => {
        r#"
local key = KEYS[1]
local MAGIC = 'idemstore/1'
local clock = redis.call('TIME')
local now_us = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local now = math.floor(now_us / 1000)
local all = redis.pcall('HGETALL', key)
if all.err then return {'foreign', redis.call('TYPE', key)['ok']} end
local kind, s, tok, id, fp, d, v = 'none', 'a', 0, false, '', 0, false
if #all > 0 then
  local r = {}
  for i = 1, #all, 2 do r[all[i]] = all[i + 1] end
  if r.m ~= MAGIC then return {'foreign', 'hash without the idemstore marker'} end
  kind, s, tok, id, fp, d, v =
    'hash', r.s, tonumber(r.t), r.id or false, r.fp or '', tonumber(r.d) or 0, r.v or false
  if (s ~= 'a' and s ~= 'f' and s ~= 'c') or not tok then
    return {'foreign', 'damaged idemstore record'}
  end
end
local live = s
if s == 'c' and d <= now then live = 'a' end
if s == 'f' and d <= now then live = 'x' end
local function agree(want) return want == '' or fp == '' or want == fp end
local function int(n) return string.format('%d', n) end
"#
    };
}

/// CLAIM. ARGV: claim id, fingerprint, lease ms, grace ms.
/// Replies `{'completed', v}`, `{'mismatch'}`, `{'flight', t, ms left}` or
/// `{'owner', t, took_over, ms left}`.
pub(crate) const CLAIM: &str = concat!(
    prelude!(),
    r#"
local cid, want, lease, grace = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
if live == 'c' then
  if not agree(want) then return {'mismatch'} end
  return {'completed', v}
end
if live == 'f' then
  if id == cid then return {'owner', tok, 0, d - now} end
  if not agree(want) then return {'mismatch'} end
  return {'flight', tok, d - now}
end
local token = math.max(tok + 1, now_us)
if v then redis.call('HDEL', key, 'v') end
redis.call('HSET', key, 'm', MAGIC, 's', 'f', 't', int(token), 'id', cid, 'fp', want,
  'd', int(now + lease))
redis.call('PEXPIRE', key, lease + grace)
local took_over = 0
if live == 'x' then took_over = 1 end
return {'owner', token, took_over, lease}
"#
);

/// COMPLETE. ARGV: token, claim id, value, ttl ms, grace ms, channel.
/// Replies 1 (stored, or stored already by this claim) or 0 (superseded).
pub(crate) const COMPLETE: &str = concat!(
    prelude!(),
    r#"
local token, cid, ttl, grace = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[4]), tonumber(ARGV[5])
if tok ~= token or id ~= cid then return 0 end
if s == 'c' then return 1 end
if s ~= 'f' then return 0 end
redis.call('HSET', key, 's', 'c', 'd', int(now + ttl), 'v', ARGV[3])
redis.call('PEXPIRE', key, ttl + grace)
redis.call('PUBLISH', ARGV[6], key)
return 1
"#
);

/// RENEW. ARGV: token, claim id, lease ms, grace ms. Replies 1 or 0.
pub(crate) const RENEW: &str = concat!(
    prelude!(),
    r#"
local token, cid, lease, grace = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
if s ~= 'f' or tok ~= token or id ~= cid then return 0 end
redis.call('HSET', key, 'd', int(now + lease))
redis.call('PEXPIRE', key, lease + grace)
return 1
"#
);

/// ABANDON. ARGV: token (or empty: the claim whose answer was lost, known
/// by its claim id alone), claim id, grace ms, channel. Replies 1 or 0.
pub(crate) const ABANDON: &str = concat!(
    prelude!(),
    r#"
local token, cid, grace = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
if s ~= 'f' or id ~= cid or (token and tok ~= token) then return 0 end
redis.call('HSET', key, 's', 'a')
redis.call('HDEL', key, 'id', 'fp', 'd', 'v')
redis.call('PEXPIRE', key, grace)
redis.call('PUBLISH', ARGV[4], key)
return 1
"#
);

/// REMOVE. ARGV: grace ms, channel. Replies 1 if a live entry was there.
pub(crate) const REMOVE: &str = concat!(
    prelude!(),
    r#"
if kind == 'none' or s == 'a' then return 0 end
redis.call('HSET', key, 's', 'a')
redis.call('HDEL', key, 'id', 'fp', 'd', 'v')
redis.call('PEXPIRE', key, tonumber(ARGV[1]))
if s == 'f' then redis.call('PUBLISH', ARGV[2], key) end
if live == 'c' or live == 'f' then return 1 end
return 0
"#
);

/// READ. ARGV: fingerprint. Replies `{'completed', v, t}`, `{'mismatch'}`,
/// `{'flight', t, ms left}`, `{'lapsed', t}` or `{'absent'}`.
pub(crate) const READ: &str = concat!(
    prelude!(),
    r#"
if (live == 'c' or live == 'f') and not agree(ARGV[1]) then return {'mismatch'} end
if live == 'c' then return {'completed', v, tok} end
if live == 'f' then return {'flight', tok, d - now} end
if live == 'x' then return {'lapsed', tok} end
return {'absent'}
"#
);
