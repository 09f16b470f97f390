"""The Lua script behind AlertCorrelator: a batch of alert decisions, each atomic, in one call to Redis.

One EVALSHA per batch: ARGV[1] is the rules as JSON, ARGV[2] the alerts as a JSON array (in order), the reply a
JSON array of decisions. Python builds one command instead of one per alert, which at thousands of alerts a second
is most of the cost. Redis runs a script alone, so monitoring replicas sharing Redis agree.

Rules: area (`<prefix>:alerts:`), now (s), dedup_ms, flap_window_s, flap_threshold, group_window_ms, ttl_ms,
storm_rate_window_s, storm_alert_threshold (alerts in that window; 0: never), storm_open_limit (incidents a group
may open within the storm window; 0: no limit), storm_window_ms.
An alert: [status, fingerprint, severity rank, service, correlation group key, service group or "" (no group:
never storms), decision key (its record), id for a new incident].

Keys, under the area: `last:<fp>` (status, at), `flap:<fp>` (status changes), `alert:<fp>` (its incident),
`group:<key>` (the open incident of a (namespace, service) group), `decision:<record>` (a record's outcome),
`storm:<sg>` (a service group's storm incident), `rate:<sg>` (its alert rate), `opened:<sg>` (the incidents it
opened within the storm window, and the first of them). An incident `<id>` keeps `incident:<id>` (fingerprint →
firing|resolved), `incident:<id>:n` (firing, total, rank, resolved) and `incident:<id>:s` (its services). Counts
are kept as alerts come and go, never recounted: a storm incident may hold tens of thousands of alerts.

A decision: [kind, effect, incident or false, firing, total, reason, storm (1 when the incident is its group's
storm incident), services, storm_started (1 when this alert started the storm)].
"""

from __future__ import annotations

DECIDE_ALERTS = """
local rules, alerts, record_area = cjson.decode(ARGV[1]), cjson.decode(ARGV[2]), ARGV[3]
local area, now, ttl = rules.area, rules.now, rules.ttl_ms
local storm_window_ms = rules.storm_window_ms
local prefix = area .. 'incident:'

-- State read once per call and written back at its end: incidents' counts, correlation groups, service groups.
local incidents, groups, sgroups = {}, {}, {}

local function incident_state(id)
  local state = incidents[id]
  if not state then
    local n = redis.call('HMGET', prefix .. id .. ':n', 'firing', 'total', 'rank', 'resolved')
    state = {firing = tonumber(n[1] or '0'), total = tonumber(n[2] or '0'), rank = tonumber(n[3] or '-1'),
             resolved = n[4] == '1', services = {}, touched = false, fresh = not n[2]}
    incidents[id] = state
  end
  return state
end
local function is_open(id) return id and not incident_state(id).resolved end

local function group_state(key)
  local state = groups[key]
  if not state then
    state = {incident = redis.call('HGET', area .. 'group:' .. key, 'incident'), touched = false, deleted = false}
    groups[key] = state
  end
  return state
end

local function sgroup_state(name)
  local state = sgroups[name]
  if not state then
    local r = redis.call('HMGET', area .. 'rate:' .. name, 'start', 'cur', 'prev')
    local st = redis.call('HMGET', area .. 'storm:' .. name, 'incident')
    local o = redis.call('HMGET', area .. 'opened:' .. name, 'first', 'opened')
    state = {start = tonumber(r[1] or now), cur = tonumber(r[2] or '0'), prev = tonumber(r[3] or '0'),
             storm = st[1] or nil, storm_dirty = false, storm_touched = false,
             first = o[1] or nil, opened = tonumber(o[2] or '0'), opened_dirty = false, opened_new = not o[1]}
    sgroups[name] = state
  end
  return state
end

-- The service group's alert rate: two fixed windows, the previous one weighted by how much of it still overlaps.
local function count_rate(sg)
  local w = rules.storm_rate_window_s
  if now - sg.start >= 2 * w then sg.start, sg.cur, sg.prev = now, 0, 0
  elseif now - sg.start >= w then sg.start, sg.prev, sg.cur = sg.start + w, sg.cur, 0 end
  sg.cur = sg.cur + 1
  return sg.prev * math.max(0, 1 - (now - sg.start) / w) + sg.cur
end

local function storm_due(sg, rate)
  local threshold, limit = rules.storm_alert_threshold, rules.storm_open_limit
  if threshold > 0 and rate >= threshold then return true end
  return limit > 0 and sg.opened >= limit
end

local function storm_incident(sg)
  if sg.storm and not is_open(sg.storm) then sg.storm, sg.storm_dirty = nil, true end
  return sg.storm
end

local function start_storm(sg, id)
  sg.storm, sg.storm_dirty = id, true
  return id
end

local function reply(kind, effect, incident, reason, sg, started)
  if not incident then return {kind, effect, false, 0, 0, reason, 0, 0, 0} end
  local state = incident_state(incident)
  local storm, services = 0, 0
  if sg and sg.storm == incident then
    storm, services = 1, redis.call('SCARD', prefix .. incident .. ':s')
  end
  return {kind, effect, incident, state.firing, state.total, reason, storm, services, started and 1 or 0}
end

-- The status changes of an alert within the flap window: "t1,t2,..." (at most flap_threshold kept).
local function flap_changes(list, changed)
  local kept = {}
  for t in string.gmatch(list or '', '[^,]+') do
    if tonumber(t) > now - rules.flap_window_s then kept[#kept + 1] = t end
  end
  if changed then kept[#kept + 1] = tostring(now) end
  while #kept > rules.flap_threshold do table.remove(kept, 1) end
  return kept
end

local function decide_one(a)
  local status, fp, rank, service, gkey, sgname = a[1], a[2], a[3], a[4], a[5], a[6]
  local sg = sgname ~= '' and sgroup_state(sgname) or nil
  local fkey = area .. 'fp:' .. fp
  local f = redis.call('HMGET', fkey, 'status', 'at', 'incident', 'changes')
  local last_status, last_at, fp_incident = f[1], tonumber(f[2] or '0'), f[3] or nil
  local duplicate = last_status == status and (now - last_at) * 1000 < rules.dedup_ms
  local changes = f[4] or ''
  if not duplicate then
    changes = table.concat(flap_changes(f[4], last_status and last_status ~= status), ',')
  end
  local function remember(incident)
    redis.call('HSET', fkey, 'status', status, 'at', now, 'changes', changes, 'incident', incident or '')
    if not f[2] or now - last_at > 3600 then redis.call('PEXPIRE', fkey, ttl) end
  end
  if fp_incident == '' then fp_incident = nil end
  if duplicate then
    remember(fp_incident)
    return {'duplicate', 'none', false, 0, 0, 'same status within the dedup window', 0, 0, 0}
  end
  local _, flaps = string.gsub(changes, '[^,]+', '')
  if flaps >= rules.flap_threshold then
    remember(fp_incident)
    return {'suppressed', 'none', fp_incident or false, 0, 0, 'flapping', 0, 0, 0}
  end
  if status == 'firing' then
    local rate = sg and count_rate(sg) or 0
    local started = false
    local group = group_state(gkey)
    local incident = group.incident
    if incident and not is_open(incident) then incident = nil end
    local kind, effect = 'merged', 'alert_added'
    if not incident then
      incident = sg and storm_incident(sg) or nil
      if not incident and sg and storm_due(sg, rate) and sg.first and is_open(sg.first) then
        incident, started = start_storm(sg, sg.first), true
      end
      if not incident then
        incident, kind, effect = a[8], 'opened', 'opened'
        if sg then
          if not sg.first then sg.first, sg.opened_new = incident, true end
          sg.opened, sg.opened_dirty = sg.opened + 1, true
        end
      end
      group.incident = incident
    end
    group.touched, group.deleted = true, false
    local state = incident_state(incident)
    state.touched = true
    local alerts = prefix .. incident
    local known = redis.call('HGET', alerts, fp)
    if known ~= 'firing' then
      redis.call('HSET', alerts, fp, 'firing')
      state.firing = state.firing + 1
      if not known then state.total = state.total + 1 end
    end
    if kind == 'merged' then
      if known == 'firing' then effect = 'none' elseif known then effect = 'alert_refired' end
    end
    if rank > state.rank then
      if kind == 'merged' and state.rank >= 0 then effect = 'escalated' end
      state.rank = rank
    end
    if not state.services[service] then
      redis.call('SADD', prefix .. incident .. ':s', service)
      state.services[service] = true
    end
    remember(incident)
    if sg then
      sg.storm_touched = true
      if not storm_incident(sg) and storm_due(sg, rate) then
        start_storm(sg, (sg.first and is_open(sg.first)) and sg.first or incident)
        started = true
      end
    end
    if kind == 'merged' and effect == 'none' then
      return reply('duplicate', 'none', incident, 'already firing in its incident', sg, started)
    end
    return reply(kind, effect, incident, '', sg, started)
  end
  remember(fp_incident)
  local incident = fp_incident
  if not incident then
    return {'suppressed', 'none', false, 0, 0, 'resolve of an alert no open incident knows', 0, 0, 0}
  end
  local alerts = prefix .. incident
  if redis.call('HGET', alerts, fp) ~= 'firing' then
    return {'duplicate', 'none', incident, 0, 0, 'already resolved', 0, 0, 0}
  end
  redis.call('HSET', alerts, fp, 'resolved')
  local state = incident_state(incident)
  state.firing, state.touched = state.firing - 1, true
  if state.firing <= 0 then
    state.resolved = true
    local group = group_state(gkey)
    if group.incident == incident then group.incident, group.deleted = nil, true end
    if sg and sg.storm == incident then sg.storm, sg.storm_dirty = nil, true end
    return reply('merged', 'resolved', incident, '', sg, false)
  end
  return reply('merged', 'alert_resolved', incident, '', sg, false)
end

-- A record already decided (its transaction aborted, or its partition moved) gets the same decision again.
local high = -1
if record_area ~= '' then high = tonumber(redis.call('GET', record_area .. 'high') or '-1') end
local results, newest = {}, high
for i, a in ipairs(alerts) do
  local decision_key = area .. 'decision:' .. a[7]
  local remembered = false
  if a[9] < 0 or a[9] <= high then remembered = redis.call('GET', decision_key) end
  if remembered then
    results[i] = cjson.decode(remembered)
  else
    results[i] = decide_one(a)
    redis.call('SET', decision_key, cjson.encode(results[i]), 'PX', ttl)
  end
  if a[9] > newest then newest = a[9] end
end
if record_area ~= '' and newest > high then redis.call('SET', record_area .. 'high', newest, 'PX', ttl) end

for id, state in pairs(incidents) do
  if state.touched then
    local key = prefix .. id .. ':n'
    redis.call('HSET', key, 'firing', state.firing, 'total', state.total, 'rank', state.rank,
               'resolved', state.resolved and '1' or '0')
    if state.fresh or state.total % 256 == 0 then
      for _, k in ipairs({key, prefix .. id, prefix .. id .. ':s'}) do redis.call('PEXPIRE', k, ttl) end
    end
  end
end
for key, state in pairs(groups) do
  local gkey = area .. 'group:' .. key
  if state.deleted then redis.call('DEL', gkey)
  elseif state.touched then redis.call('HSET', gkey, 'incident', state.incident); redis.call('PEXPIRE', gkey, rules.group_window_ms) end
end
for name, sg in pairs(sgroups) do
  redis.call('HSET', area .. 'rate:' .. name, 'start', sg.start, 'cur', sg.cur, 'prev', sg.prev)
  redis.call('PEXPIRE', area .. 'rate:' .. name, math.floor(2 * rules.storm_rate_window_s * 1000) + 1000)
  local skey = area .. 'storm:' .. name
  if sg.storm_dirty then
    if sg.storm then redis.call('HSET', skey, 'incident', sg.storm, 'since', now) else redis.call('DEL', skey) end
  end
  if sg.storm and (sg.storm_dirty or sg.storm_touched) then redis.call('PEXPIRE', skey, storm_window_ms) end
  if sg.opened_dirty then
    local okey = area .. 'opened:' .. name
    redis.call('HSET', okey, 'first', sg.first, 'opened', sg.opened)
    if sg.opened_new then redis.call('PEXPIRE', okey, storm_window_ms) end
  end
end
return cjson.encode(results)
"""
