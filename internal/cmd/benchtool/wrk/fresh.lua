-- wrk script: every request carries the next token of the file named by
-- BENCH_TOKENS (one token a line), cycling; each wrk thread starts at its own
-- offset. With more tokens than the gateway's verified-token cache holds,
-- every request is a cache miss. BENCH_PATH is the request path.
local threads = 0
function setup(thread)
	thread:set("tid", threads)
	threads = threads + 1
end

local toks, n, i
function init(args)
	toks = {}
	for line in io.lines(os.getenv("BENCH_TOKENS")) do
		toks[#toks + 1] = "Bearer " .. line
	end
	n = #toks
	local nthreads = tonumber(os.getenv("BENCH_THREADS") or "1")
	i = math.floor((tid or 0) * n / nthreads)
	wrk.path = os.getenv("BENCH_PATH") or wrk.path
end

function request()
	i = i + 1
	if i > n then
		i = 1
	end
	wrk.headers["Authorization"] = toks[i]
	return wrk.format()
end
