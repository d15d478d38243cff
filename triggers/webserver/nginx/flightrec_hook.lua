-- flightrec trigger hook for nginx (lua-nginx-module, Debian: libnginx-mod-http-lua).
--
-- From log_by_lua, after the response has been sent: when the request took at least
-- $flightrec_threshold_ms, POST its URL, method, duration and request id to the flightrec
-- daemon's hook. The POST runs in a zero-delay timer (cosockets are not allowed in the log
-- phase, and the timer keeps it off the request's path); a slow or absent daemon never delays
-- a client. Needs no Lua library beyond what the module ships.
local M = {}

local function json_string(s)
    s = tostring(s or "")
    s = s:gsub('[%c"\\]', function(c)
        if c == '"' then return '\\"' end
        if c == '\\' then return '\\\\' end
        return string.format("\\u%04x", c:byte())
    end)
    return '"' .. s .. '"'
end

local function post(premature, host, port, token, body)
    if premature then
        return
    end
    local sock = ngx.socket.tcp()
    sock:settimeouts(500, 500, 1000)
    local ok, err = sock:connect(host, port)
    if not ok then
        ngx.log(ngx.WARN, "flightrec hook: cannot connect to ", host, ":", port, ": ", err)
        return
    end
    local req = "POST /v1/trigger HTTP/1.1\r\n"
        .. "Host: " .. host .. ":" .. port .. "\r\n"
        .. "Authorization: Bearer " .. token .. "\r\n"
        .. "Content-Type: application/json\r\n"
        .. "Content-Length: " .. #body .. "\r\n"
        .. "Connection: close\r\n\r\n"
        .. body
    local _, serr = sock:send(req)
    if serr then
        ngx.log(ngx.WARN, "flightrec hook: send: ", serr)
        sock:close()
        return
    end
    local status = sock:receive("*l")
    sock:close()
    -- 202: snapshot admitted or joined; 429: the governor suppressed it (by design, quiet).
    if status and not (status:find(" 202 ", 1, true) or status:find(" 429 ", 1, true)) then
        ngx.log(ngx.WARN, "flightrec hook answered: ", status)
    end
end

-- Call from log_by_lua_block. Reads $flightrec_threshold_ms, $flightrec_hook_host,
-- $flightrec_hook_port and $flightrec_hook_token (set them with `set` in the server block).
function M.log()
    local v = ngx.var
    local threshold = tonumber(v.flightrec_threshold_ms) or 500
    local ms = (tonumber(v.request_time) or 0) * 1000
    if ms < threshold then
        return
    end
    local request_id = v.http_x_request_id
    if not request_id or request_id == "" then
        request_id = v.request_id
    end
    local body = "{"
        .. '"reason":' .. json_string("slow request: " .. v.request_method .. " " .. v.uri) .. ","
        .. '"url":' .. json_string(v.request_uri) .. ","
        .. '"method":' .. json_string(v.request_method) .. ","
        .. '"duration_ms":' .. string.format("%.3f", ms) .. ","
        .. '"request_id":' .. json_string(request_id) .. ","
        -- The worker and the request's start let `flightrec analyze` tell the request's
        -- story; nginx workers are single-threaded, so the pid is the thread.
        .. '"pid":' .. ngx.worker.pid() .. ","
        .. '"tid":' .. ngx.worker.pid() .. ","
        .. '"start_realtime_ns":' .. string.format("%.0f", ngx.req.start_time() * 1e9) .. ","
        .. '"tags":{"status":' .. json_string(v.status)
        .. ',"server":' .. json_string(v.server_name)
        .. ',"upstream":' .. json_string(v.upstream_addr) .. "}"
        .. "}"
    local ok, err = ngx.timer.at(0, post, v.flightrec_hook_host, tonumber(v.flightrec_hook_port),
        v.flightrec_hook_token, body)
    if not ok then
        ngx.log(ngx.WARN, "flightrec hook: cannot start the timer: ", err)
    end
end

return M
