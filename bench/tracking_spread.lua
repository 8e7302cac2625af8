-- wrk script for bench/tracking.sh MESSAGES=N: each request takes the next
-- path of a file (one URL path a line), so hits spread over many copies.
-- Each thread starts at its own place in the list.
--
--   wrk -s bench/tracking_spread.lua http://HOST:PORT -- PATHS_FILE
local paths = {}
local i = 0

function init(args)
    for line in io.lines(args[1]) do
        if line ~= "" then paths[#paths + 1] = line end
    end
    if #paths == 0 then error("no paths in " .. args[1]) end
    i = (index or 0) * math.floor(#paths / 2)
end

-- setup runs in the main state, before each thread's init; index becomes a
-- global of the thread's own state.
local threads = 0
function setup(thread)
    thread:set("index", threads)
    threads = threads + 1
end

function request()
    i = i % #paths + 1
    return wrk.format("GET", paths[i])
end
