package protocols

// webdavMethods are the methods that only WebDAV and its extensions define:
// RFC 4918 (PROPFIND ... UNLOCK), RFC 5323 SEARCH, RFC 3253 DeltaV (REPORT,
// VERSION-CONTROL, ...), RFC 4791 MKCALENDAR, RFC 3744 ACL, RFC 3648
// ORDERPATCH, RFC 5842 BIND/UNBIND/REBIND, RFC 4437 redirect references.
// GET, PUT, DELETE, OPTIONS... are used by WebDAV clients too, but they are
// plain HTTP: a request using them says nothing about WebDAV, so the WebDAV
// route only takes requests that a plain HTTP server could not serve.
// Read-only.
var webdavMethods = []string{
	"PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK",
	"SEARCH", "REPORT", "MKCALENDAR", "ACL", "ORDERPATCH",
	"BIND", "UNBIND", "REBIND", "MKREDIRECTREF", "UPDATEREDIRECTREF",
	"VERSION-CONTROL", "CHECKOUT", "CHECKIN", "UNCHECKOUT", "MKWORKSPACE",
	"UPDATE", "LABEL", "MERGE", "MKACTIVITY", "BASELINE-CONTROL",
}

func init() { register(webDAVDescriptor, NewWebDAVProtocol) }

var webDAVDescriptor = Descriptor{Spec: Spec{Name: "WebDAV", Transports: TCP, Detect: detectWebDAV, FirstBytes: httpFirstBytes(webdavMethods),
	Inspect: inspectHTTP, Specificity: 1}, Routable: HostKey, Summary: "HTTP/1.x request with a WebDAV-only method"}

// NewWebDAVProtocol returns the WebDAV protocol: an HTTP/1.x request line
// whose method is WebDAV-only (see webdavMethods). It outranks HTTP
// (Specificity 1), which matches the same request line.
func NewWebDAVProtocol(target string) *Protocol { return build(&webDAVDescriptor, target) }

func detectWebDAV(data []byte) Result {
	_, r := httpScanRequestLine(data, webdavMethods)
	return r
}
