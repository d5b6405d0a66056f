-- wrk script of `make bench`: sends the requests listed in a file and prints one JSON line.
--
-- Arguments after `--`: the file, then wrk's thread count. Each line of the file is
-- "METHOD PATH" or "METHOD PATH JSON-BODY". Thread i sends lines i, i+n, i+2n, ... in a
-- cycle, so no two threads send the same line: the miss path needs ids that nobody has
-- asked for yet, and the hit path spreads over many documents instead of one.

local threads = {}

function setup(thread)
  thread:set("thread_index", #threads)
  table.insert(threads, thread)
end

function init(args)
  local lines = {}
  for line in io.lines(args[1]) do
    lines[#lines + 1] = line
  end
  local thread_count = tonumber(args[2])
  prepared = {}
  for i = thread_index + 1, #lines, thread_count do
    local method, path, body = lines[i]:match("^(%S+) (%S+) ?(.*)$")
    if body == "" then
      prepared[#prepared + 1] = wrk.format(method, path)
    else
      -- Formatted once here: request() then only hands out prepared strings.
      prepared[#prepared + 1] = wrk.format(method, path, { ["Content-Type"] = "application/json" }, body)
    end
  end
  next_request = 0
end

function request()
  next_request = next_request % #prepared + 1
  return prepared[next_request]
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "socket_errors": %d, "non_2xx": %d, "p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration,
    errors.connect + errors.read + errors.write + errors.timeout, errors.status,
    latency:percentile(50), latency:percentile(99)))
end
