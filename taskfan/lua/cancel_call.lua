-- cancel_call.lua: take back a queued entry that no node has taken yet, so that
-- it never runs (Executor futures: Future.cancel()). Atomic against the nodes'
-- XREADGROUP: an entry is taken back only while its id is past the group's
-- last-delivered-id, that is, before any consumer of the group read it.
--
-- KEYS[1]  taskfan:{q:NAME}:stream  queue stream
-- ARGV[1]  consumer group (workers)
-- ARGV[2]  the entry's id
--
-- Returns 1 when the entry was deleted (it will never run), 0 when a node took
-- it already (running, or finished) or it is gone.
local function after(a, b)
  local ams, aseq = string.match(a, '^(%d+)-(%d+)$')
  local bms, bseq = string.match(b, '^(%d+)-(%d+)$')
  if not ams or not bms then
    return false
  end
  ams, aseq, bms, bseq = tonumber(ams), tonumber(aseq), tonumber(bms), tonumber(bseq)
  return ams > bms or (ams == bms and aseq > bseq)
end

if #redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2]) == 0 then
  return 0
end
for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local name, last
  for i = 1, #group, 2 do
    if group[i] == 'name' then
      name = group[i + 1]
    elseif group[i] == 'last-delivered-id' then
      last = group[i + 1]
    end
  end
  if name == ARGV[1] and not after(ARGV[2], last) then
    local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
    if not pending[1] or pending[1][2] ~= ARGV[3] then
      return 0
    end
  end
end
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
