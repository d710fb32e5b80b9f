-- wrk: POST a small chat completion; BENCH_KEY (optional) is sent as a bearer key.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local key = os.getenv("BENCH_KEY")
if key and key ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. key
end
wrk.body = '{"model":"bench-model","messages":[{"role":"user","content":"Name three Hanseatic cities."}],"max_tokens":16}'
