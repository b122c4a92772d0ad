-- wrk script for bench/gateway.py: cycles through pre-built POST requests.
--
--   wrk -t1 -c16 -d10s --latency -s bench/_load.lua http://127.0.0.1:PORT -- BODIES \
--       [THINK_MS [RECORD EVERY]]
--
-- BODIES is a file with one request per line: "<path>\t<json body>". Each thread
-- starts at a random line and walks the file in order, wrapping around. THINK_MS
-- (optional, > 0) paces each connection with an exponentially distributed pause
-- of that mean between a response and its next request, so that the offered load
-- is about connections / (THINK_MS + latency) requests per second.
-- With RECORD and EVERY, one response body in EVERY is appended to the file RECORD, a
-- line each, for bench/gateway.py to check the answers against the in-process model.
-- wrk's own latency histogram and counters are the result.

local requests = {}
local index = 1
local think_ms = 0
local record_file = nil
local record_every = 0
local responses = 0

function init(args)
  local file = args[1]
  if file == nil then
    error("give the request file after --")
  end
  for line in io.lines(file) do
    local tab = line:find("\t", 1, true)
    if tab ~= nil then
      local path = line:sub(1, tab - 1)
      local body = line:sub(tab + 1)
      requests[#requests + 1] = wrk.format(
        "POST", path, { ["Content-Type"] = "application/json" }, body
      )
    end
  end
  if #requests == 0 then
    error("no requests in " .. file)
  end
  math.randomseed(os.time() + math.floor(os.clock() * 1000000))
  index = math.random(#requests)
  think_ms = tonumber(args[2] or "0") or 0
  if think_ms > 0 then
    -- Defined only when pacing: wrk schedules a timer per request when delay() exists.
    delay = function()
      return math.floor(-think_ms * math.log(1 - math.random()) + 0.5)
    end
  end
  record_file = args[3]
  record_every = tonumber(args[4] or "0") or 0
  if record_file ~= nil and record_every > 0 then
    -- Defined only when recording: wrk copies every response into Lua when response() exists.
    response = function(status, headers, body)
      responses = responses + 1
      if status < 300 and responses % record_every == 0 then
        -- Opened per write: wrk may end a thread without closing its Lua state's files.
        local out = io.open(record_file, "a")
        if out ~= nil then
          out:write((body:gsub("\n", " ")), "\n")
          out:close()
        end
      end
    end
  end
end

function request()
  local r = requests[index]
  index = index % #requests + 1
  return r
end
