-- dead_letter.lua: move one queue entry to the dead-letter stream with a reason,
-- and take it out of the queue, in one step.
--
-- KEYS[1]  taskfan:{q:NAME}:stream  the queue stream (consumer group ARGV[2])
-- KEYS[2]  taskfan:{q:NAME}:dead    the dead-letter stream, capped near ARGV[4]
-- ARGV[1]  id of the entry in the queue stream
-- ARGV[2]  consumer group name
-- ARGV[3]  reason, one line for operators
-- ARGV[4]  approximate maximum length of the dead-letter stream
-- ARGV[5]  now, in seconds since the epoch
-- ARGV[6..] the entry's field/value pairs, copied as they were
--
-- Returns the id of the new dead-letter entry. When the group is gone (Redis
-- restarted empty, or the queue purged) there is nothing left to acknowledge:
-- the XACK's NOGROUP error is ignored rather than failing the script half-way.
local fields = {'reason', ARGV[3], 'entry', ARGV[1], 'at', ARGV[5]}
for i = 6, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', unpack(fields))
redis.pcall('XACK', KEYS[1], ARGV[2], ARGV[1])
redis.call('XDEL', KEYS[1], ARGV[1])
return id
