-- wrk script: POST /refresh with the refresh token of BENCH_REFRESH in a JSON
-- body (the gateway runs in refresh body mode). The request is the same every
-- time, so wrk builds it once.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"refresh_token":"' .. os.getenv("BENCH_REFRESH") .. '"}'
