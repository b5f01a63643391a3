-- lease.lua: renew the enqueue lease of a job its producer is still sending
-- (not sealed yet). A producer renews it while it enqueues, however slowly its
-- items come; when the lease lapses, abandon.lua ends the job as "abandoned".
-- The deadline is in the server's clock (TIME), so producers' and nodes'
-- clocks do not matter.
--
-- KEYS[1]  taskfan:{j:ID}:meta     job meta hash (field lease_until)
-- ARGV[1]  seconds the lease lasts from now
--
-- Returns 1 when renewed, 0 when the job needs no lease (sealed, or ended
-- otherwise than abandoned), -1 when it does not exist, -2 when it was abandoned.
local meta = redis.call('HMGET', KEYS[1], 'state', 'sealed')
if not meta[1] then
  return -1
end
if meta[1] == 'abandoned' then
  return -2
end
if meta[1] ~= 'active' or meta[2] == '1' then
  return 0
end
local now = redis.call('TIME')
local deadline = tonumber(now[1]) + tonumber(now[2]) / 1000000 + tonumber(ARGV[1])
redis.call('HSET', KEYS[1], 'lease_until', string.format('%.3f', deadline))
return 1
