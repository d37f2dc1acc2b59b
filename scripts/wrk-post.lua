-- POSTs the body in $WRK_BODY with the Inference-Header-Content-Length in $WRK_IHCL.
local f = assert(io.open(os.getenv("WRK_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Inference-Header-Content-Length"] = os.getenv("WRK_IHCL")
wrk.headers["Content-Type"] = "application/octet-stream"
