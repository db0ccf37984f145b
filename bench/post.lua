-- wrk script: POST the JSON body in $BENCH_BODY, with a different order "ID" in every
-- request (so every webhook is distinct, as in real traffic), or with BENCH_IDENTICAL=1 the
-- very same bytes every time (what a first load test with one fixture sends), and print one
-- JSON summary.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
local body = f:read("*a")
f:close()
local prefix = '{"ID":'
local suffix = assert(string.match(body, '^{"ID":%d+(.*)$'), 'body must start with {"ID":<n>')
local counter = 0
local seed = os.time() % 100000 * 100000

local identical = os.getenv("BENCH_IDENTICAL") == "1"
local fixed = nil

request = function()
  if identical then
    fixed = fixed or wrk.format(nil, nil, nil, body)
    return fixed
  end
  counter = counter + 1
  return wrk.format(nil, nil, nil, prefix .. (seed + counter) .. suffix)
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"socket_errors":%d,"non2xx":%d,"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
