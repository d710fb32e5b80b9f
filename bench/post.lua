-- wrk: POST a small chat completion; BENCH_KEY (optional) is sent as a bearer key (several,
-- separated by commas: each request takes the next), BENCH_HEADERS (optional, one "name: value" a
-- line) as further headers.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local extra = os.getenv("BENCH_HEADERS") or ""
for line in extra:gmatch("[^\n]+") do
  local name, value = line:match("^([^:]+):%s*(.*)$")
  if name then
    wrk.headers[name] = value
  end
end
wrk.body = '{"model":"bench-model","messages":[{"role":"user","content":"Name three Hanseatic cities."}],"max_tokens":16}'
local keys = {}
for key in (os.getenv("BENCH_KEY") or ""):gmatch("[^,]+") do
  keys[#keys + 1] = key
end
if #keys == 1 then
  wrk.headers["Authorization"] = "Bearer " .. keys[1]
elseif #keys > 1 then
  local next_key = 0
  request = function()
    next_key = next_key % #keys + 1
    wrk.headers["Authorization"] = "Bearer " .. keys[next_key]
    return wrk.format()
  end
end
