-- wrk script for bench/service_overhead.py: POST /api/v1/ai/chat as one user, one conversation.
-- BENCH_API_KEY is the user's API key, BENCH_STATE_KEY the conversation (so one session).
-- Prints one JSON line at the end: completed requests, errors, latency percentiles in µs.

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_API_KEY")
wrk.body = string.format(
   '{"graphId":"builtin:chat","stateKey":"%s","messages":[{"role":"user",'
      .. '"content":"Summarise this week\'s community activity in two lines."}]}',
   os.getenv("BENCH_STATE_KEY")
)

function done(summary, latency, requests)
   local errors = summary.errors
   io.write(string.format(
      '{"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,"read_errors":%d,'
         .. '"write_errors":%d,"status_errors":%d,"timeouts":%d,'
         .. '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
      summary.requests, summary.duration, summary.bytes, errors.connect, errors.read,
      errors.write, errors.status, errors.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.max, latency.mean
   ))
end
