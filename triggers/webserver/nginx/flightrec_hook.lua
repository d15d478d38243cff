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

local REPLACEMENT = "\239\191\189" -- U+FFFD

-- The length of the valid UTF-8 sequence at byte i of s, or nil. C1 controls (U+0080 to
-- U+009F), overlong forms and surrogates count as invalid: the hook refuses control
-- characters and JSON parsers refuse the rest.
local function utf8_len(s, i)
    local c = s:byte(i)
    local need
    if c >= 0xC2 and c <= 0xDF then
        need = 1
    elseif c >= 0xE0 and c <= 0xEF then
        need = 2
    elseif c >= 0xF0 and c <= 0xF4 then
        need = 3
    else
        return nil
    end
    for k = 1, need do
        local b = s:byte(i + k)
        if not b or b < 0x80 or b > 0xBF then
            return nil
        end
    end
    local b1 = s:byte(i + 1)
    if (c == 0xC2 and b1 <= 0x9F) or (c == 0xE0 and b1 < 0xA0) or (c == 0xED and b1 > 0x9F)
        or (c == 0xF0 and b1 < 0x90) or (c == 0xF4 and b1 > 0x8F) then
        return nil
    end
    return need + 1
end

-- s as text the hook accepts: control characters written as %XX (as in a URL) and bytes
-- that are not UTF-8 replaced by U+FFFD, so a hostile or binary URI still gets reported.
local function clean(s)
    s = tostring(s or "")
    if not s:find("[%z\1-\31\127-\255]") then
        return s
    end
    local out, i, n = {}, 1, #s
    while i <= n do
        local c = s:byte(i)
        if c < 0x20 or c == 0x7F then
            out[#out + 1] = string.format("%%%02X", c)
            i = i + 1
        elseif c < 0x80 then
            out[#out + 1] = string.char(c)
            i = i + 1
        else
            local len = utf8_len(s, i)
            if len then
                out[#out + 1] = s:sub(i, i + len - 1)
                i = i + len
            else
                out[#out + 1] = REPLACEMENT
                i = i + 1
            end
        end
    end
    return table.concat(out)
end

-- Clean text cut to at most max bytes on a character boundary, ending in "..." when cut: the
-- hook refuses longer fields, and a long URI must still be reported.
local function fit(s, max)
    s = clean(s)
    if #s <= max then
        return s
    end
    local k = max - 3
    -- Back off continuation bytes so no character is split.
    while k > 0 and s:byte(k + 1) >= 0x80 and s:byte(k + 1) <= 0xBF do
        k = k - 1
    end
    return s:sub(1, k) .. "..."
end

-- The hook's limits (triggers/src/trigger.rs: MAX_REASON, MAX_URL, MAX_REQUEST_ID,
-- MAX_TAG_VALUE).
local MAX_REASON, MAX_URL, MAX_REQUEST_ID, MAX_TAG_VALUE = 256, 2048, 128, 256

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
    local request_id = fit(v.http_x_request_id, MAX_REQUEST_ID)
    if not request_id:find("%S") then
        request_id = v.request_id
    end
    local method = ""
    -- The hook takes 1 to 16 ASCII letters; nginx accepts longer and odder methods, which are
    -- left out rather than losing the report.
    if v.request_method:find("^%a+$") and #v.request_method <= 16 then
        method = '"method":' .. json_string(v.request_method) .. ","
    end
    local body = "{"
        .. '"reason":' .. json_string(fit("slow request: " .. v.request_method .. " " .. v.uri,
            MAX_REASON)) .. ","
        .. '"url":' .. json_string(fit(v.request_uri, MAX_URL)) .. ","
        .. method
        .. '"duration_ms":' .. string.format("%.3f", ms) .. ","
        .. '"request_id":' .. json_string(request_id) .. ","
        -- The worker and the request's start let `flightrec analyze` tell the request's
        -- story; nginx workers are single-threaded, so the pid is the thread.
        .. '"pid":' .. ngx.worker.pid() .. ","
        .. '"tid":' .. ngx.worker.pid() .. ","
        .. '"start_realtime_ns":' .. string.format("%.0f", ngx.req.start_time() * 1e9) .. ","
        .. '"tags":{"status":' .. json_string(fit(v.status, MAX_TAG_VALUE))
        .. ',"server":' .. json_string(fit(v.server_name, MAX_TAG_VALUE))
        .. ',"upstream":' .. json_string(fit(v.upstream_addr, MAX_TAG_VALUE)) .. "}"
        .. "}"
    local ok, err = ngx.timer.at(0, post, v.flightrec_hook_host, tonumber(v.flightrec_hook_port),
        v.flightrec_hook_token, body)
    if not ok then
        ngx.log(ngx.WARN, "flightrec hook: cannot start the timer: ", err)
    end
end

return M
