-- wrk script: POST /refresh with a refresh token in a JSON body (the gateway
-- runs in refresh body mode). BENCH_REFRESH_TOKENS names a file of refresh
-- tokens, one a line, each of its own session; each wrk thread takes every
-- BENCH_THREADS-th line from its own offset.
--
-- With BENCH_ROTATE=1 every refresh spends the token it presents and the
-- response carries its successor. wrk's Lua does not say which connection a
-- request() or a response() is for, so the tokens are kept per thread as a
-- pool: request() takes any token out of the pool, response() puts the
-- successor it was handed back in. Each session then has exactly one token
-- in the pool or in flight, always its newest, and no token is ever
-- presented twice: the gateway rotates every request, and never sees a
-- reuse (which would fork or revoke the session). A connection has at most
-- one request in flight, so a pool of more tokens than the thread has
-- connections never runs dry; a failed request loses its session, which is
-- why the pool holds more than one per connection.
--
-- With BENCH_ROTATE=0 the tokens stay valid and are presented in turn.
--
-- done() prints one line that benchtool parses: responses other than 200,
-- 200s without a successor, and requests made with an empty pool.
local threads = {}
function setup(thread)
	thread:set("tid", #threads)
	table.insert(threads, thread)
end

local pool, n, rotate, i
non200, nosucc, starved = 0, 0, 0

function init(args)
	local nthreads = tonumber(os.getenv("BENCH_THREADS") or "1")
	rotate = os.getenv("BENCH_ROTATE") == "1"
	pool, n, i = {}, 0, 0
	local k = 0
	for line in io.lines(os.getenv("BENCH_REFRESH_TOKENS")) do
		if k % nthreads == (tid or 0) then
			n = n + 1
			pool[n] = line
		end
		k = k + 1
	end
	wrk.method = "POST"
	wrk.headers["Content-Type"] = "application/json"
end

local function body(tok)
	return '{"refresh_token":"' .. tok .. '"}'
end

function request()
	local tok
	if rotate then
		if n == 0 then
			starved = starved + 1
			tok = ""
		else
			tok = pool[n]
			pool[n] = nil
			n = n - 1
		end
	else
		i = i % n + 1
		tok = pool[i]
	end
	return wrk.format(nil, nil, nil, body(tok))
end

function response(status, headers, resp)
	if status ~= 200 then
		non200 = non200 + 1
		return
	end
	if rotate then
		local succ = string.match(resp, '"refresh_token":"([^"]+)"')
		if succ then
			n = n + 1
			pool[n] = succ
		else
			nosucc = nosucc + 1
		end
	end
end

function done(summary, latency, requests)
	local a, b, c = 0, 0, 0
	for _, t in ipairs(threads) do
		a = a + t:get("non200")
		b = b + t:get("nosucc")
		c = c + t:get("starved")
	end
	io.write(string.format("refresh chains: non-200 %d, 200 without a successor %d, starved %d\n", a, b, c))
end
