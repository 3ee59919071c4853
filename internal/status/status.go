// Package status serves the status page of the metrics port: /status
// (HTML that renders without JavaScript and, with it, updates itself from
// /status.json), /status.json and /status.csv — the same snapshot
// (metrics.Status) in three formats, with the same filters — and the
// operator's actions, POST only.
//
// What a web page could do to it is fenced off here (docs/security.md):
//   - every request must name the port in its Host header by an IP address,
//     "localhost" or the configured bind host, so a DNS-rebinding page (a
//     name of the attacker's that resolves to 127.0.0.1) reads nothing;
//   - an action is a POST with the token in a header (compared in constant
//     time); a form on another origin cannot set a header, and a request
//     whose Origin or Sec-Fetch-Site says another site sent it is refused
//     before the token is looked at; a GET changes nothing;
//   - the page loads nothing from elsewhere, cannot be framed, and its
//     Content-Security-Policy allows only its own scripts;
//   - every action is logged with the client's address and what it did;
//     refusals, which need no token, at most 5 lines a second.
//
// Bounds: an action's body is at most MaxActionBody bytes; the token is
// MinTokenLen to MaxTokenLen bytes; every list the snapshot holds is bounded
// by its builder (metrics.Status).
package status

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/darkit/protoplex/internal/guard"
	"github.com/darkit/protoplex/internal/metrics"
)

// Bounds of the admin token and of an action request.
const (
	MinTokenLen   = 16   // a token shorter is refused at start: guessable
	MaxTokenLen   = 4096 // and one longer: a file read must stay small
	MaxActionBody = 4096
)

// TokenHeader carries the admin token of an action.
const TokenHeader = "X-Protoplex-Token"

// Actions are what an operator may change at run time. Each returns an
// error naming what it did not find.
type Actions interface {
	// SetTarget holds target of route in state ("drain", "maint") or
	// releases it ("ready").
	SetTarget(route, target, state string) error
	// Unban lifts a source's ban.
	Unban(addr netip.Addr) error
	// CloseConn closes one live connection.
	CloseConn(id uint64) error
}

// Config is what a Handler serves.
type Config struct {
	// Snapshot returns the current status; the handler never modifies it.
	Snapshot func() *metrics.Status
	// Actions, with a non-empty Token, enable the actions.
	Actions Actions
	Token   []byte
	// Bind returns the host the port was configured with and the port it
	// is bound to, which a request's Host header must name.
	Bind func() (host string, port int)
	Log  *slog.Logger
}

// Handler serves /status, /status.json, /status.csv, /status/assets/ and
// the actions under /status/.
func Handler(cfg Config) http.Handler {
	// Refusals need no token, so anyone who reaches the port can cause
	// them: their log lines are rate-limited. Actions done are all logged.
	h := &handler{cfg: cfg, refusals: guard.NewRateLimitedLogger(cfg.Log, 5, time.Now)}
	if len(cfg.Token) > 0 {
		sum := sha256.Sum256(cfg.Token)
		h.token = sum[:]
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", h.page)
	mux.HandleFunc("GET /status.json", h.json)
	mux.HandleFunc("GET /status.csv", h.csv)
	mux.Handle("GET /status/assets/", http.StripPrefix("/status/assets/", http.FileServerFS(assetsFS)))
	for name, do := range map[string]func(*http.Request) (string, error){
		"target": h.setTarget, "unban": h.unban, "close": h.closeConn,
	} {
		mux.HandleFunc("/status/"+name, func(w http.ResponseWriter, r *http.Request) { h.action(w, r, name, do) })
	}
	return h.guard(mux)
}

type handler struct {
	cfg      Config
	token    []byte // sha256 of the token; nil: actions off
	refusals *guard.RateLimitedLogger
}

// guard refuses a request whose Host does not name this port, and sets
// the headers that keep the page from being framed or sniffed.
func (h *handler) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !h.hostAllowed(r.Host) {
			http.Error(w, "status: Host "+strconv.Quote(r.Host)+" does not name this port (DNS rebinding?)", http.StatusMisdirectedRequest)
			return
		}
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r)
	})
}

// hostAllowed: the Host header names the bound port, by an IP address,
// "localhost", or the configured bind host. A name an attacker controls
// (DNS rebinding: evil.example resolving to 127.0.0.1) is refused.
func (h *handler) hostAllowed(hostport string) bool {
	bindHost, port := h.cfg.Bind()
	host, p, err := net.SplitHostPort(hostport)
	if err != nil {
		host, p = hostport, "80" // no port: the scheme's
	}
	if p != strconv.Itoa(port) {
		return false
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if _, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return true
	}
	return host == "localhost" || (bindHost != "" && host == strings.TrimSuffix(strings.ToLower(bindHost), "."))
}

// Query is a request's filters: only the targets with a problem, and only
// one protocol's routes.
type Query struct {
	Problems bool
	Protocol string
}

// ParseQuery reads ?problems=1&protocol=NAME.
func ParseQuery(v url.Values) Query {
	p := v.Get("problems")
	return Query{Problems: p != "" && p != "0" && p != "false", Protocol: v.Get("protocol")}
}

// Encode is the query string of q, "" when q filters nothing.
func (q Query) Encode() string {
	v := url.Values{}
	if q.Problems {
		v.Set("problems", "1")
	}
	if q.Protocol != "" {
		v.Set("protocol", q.Protocol)
	}
	if len(v) == 0 {
		return ""
	}
	return "?" + v.Encode()
}

// Filter returns s with only the routes and targets q asks for; s is not
// modified.
func Filter(s *metrics.Status, q Query) *metrics.Status {
	if !q.Problems && q.Protocol == "" {
		return s
	}
	out := *s
	out.Routes = nil
	for _, r := range s.Routes {
		if q.Protocol != "" && !strings.EqualFold(r.Protocol, q.Protocol) {
			continue
		}
		if q.Problems {
			var kept []metrics.TargetState
			for _, t := range r.Targets {
				if t.Problem() {
					kept = append(kept, t)
				}
			}
			if len(kept) == 0 {
				continue
			}
			r.Targets = kept
		}
		out.Routes = append(out.Routes, r)
	}
	return &out
}

func (h *handler) json(w http.ResponseWriter, r *http.Request) {
	s := Filter(h.cfg.Snapshot(), ParseQuery(r.URL.Query()))
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(s)
}

// csv writes one row per target, the columns of metrics.TargetFields.
func (h *handler) csv(w http.ResponseWriter, r *http.Request) {
	s := Filter(h.cfg.Snapshot(), ParseQuery(r.URL.Query()))
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	WriteCSV(w, s)
}

// WriteCSV writes s's targets as CSV: a header of metrics.TargetFields'
// names, then one row per target.
func WriteCSV(w interface{ Write([]byte) (int, error) }, s *metrics.Status) {
	cw := csv.NewWriter(w)
	row := make([]string, len(metrics.TargetFields))
	for i, f := range metrics.TargetFields {
		row[i] = f.Name
	}
	_ = cw.Write(row)
	for _, rt := range s.Routes {
		for i := range rt.Targets {
			for j, f := range metrics.TargetFields {
				row[j] = metrics.FormatRaw(f.Get(&rt.Targets[i]))
			}
			_ = cw.Write(row)
		}
	}
	cw.Flush()
}

// action runs one operator action: POST only, actions enabled, sent by
// this origin (or by no browser at all), with the right token.
func (h *handler) action(w http.ResponseWriter, r *http.Request, name string, do func(*http.Request) (string, error)) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "status: actions are POST only", http.StatusMethodNotAllowed)
		return
	}
	refuse := func(code int, why string) {
		h.refusals.Warn("status action refused", "remote", r.RemoteAddr, "action", name, "why", why)
		writeResult(w, code, why)
	}
	switch {
	case h.token == nil || h.cfg.Actions == nil:
		refuse(http.StatusForbidden, "actions are disabled (monitoring.admin)")
		return
	case !h.sameOrigin(r):
		refuse(http.StatusForbidden, "cross-origin request")
		return
	}
	got := sha256.Sum256([]byte(r.Header.Get(TokenHeader)))
	if subtle.ConstantTimeCompare(got[:], h.token) != 1 {
		refuse(http.StatusForbidden, "wrong or missing token ("+TokenHeader+")")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, MaxActionBody)
	if err := r.ParseForm(); err != nil {
		refuse(http.StatusBadRequest, "bad request body: "+err.Error())
		return
	}
	what, err := do(r)
	if err != nil {
		h.cfg.Log.Warn("status action failed", "remote", r.RemoteAddr, "action", name, "what", what, "err", err)
		writeResult(w, http.StatusNotFound, err.Error())
		return
	}
	h.cfg.Log.Warn("status action", "remote", r.RemoteAddr, "action", name, "what", what)
	writeResult(w, http.StatusOK, what)
}

// sameOrigin: a browser says where a request comes from (Origin,
// Sec-Fetch-Site); only this page itself may send an action. A request
// that says nothing comes from no browser (curl, protoplex target).
func (h *handler) sameOrigin(r *http.Request) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "", "same-origin", "none":
	default:
		return false
	}
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && u.Scheme == "http" && strings.EqualFold(u.Host, r.Host)
}

func writeResult(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(struct {
		OK      bool   `json:"ok"`
		Message string `json:"message"`
	}{code == http.StatusOK, msg})
}

func (h *handler) setTarget(r *http.Request) (string, error) {
	route, target, state := r.PostForm.Get("route"), r.PostForm.Get("target"), r.PostForm.Get("state")
	what := fmt.Sprintf("route %q target %q -> %s", route, target, state)
	return what, h.cfg.Actions.SetTarget(route, target, state)
}

func (h *handler) unban(r *http.Request) (string, error) {
	a, err := netip.ParseAddr(r.PostForm.Get("addr"))
	if err != nil {
		return "unban " + strconv.Quote(r.PostForm.Get("addr")), fmt.Errorf("addr: %v", err)
	}
	return "unban " + a.String(), h.cfg.Actions.Unban(a)
}

func (h *handler) closeConn(r *http.Request) (string, error) {
	id, err := strconv.ParseUint(r.PostForm.Get("id"), 10, 64)
	if err != nil {
		return "close " + strconv.Quote(r.PostForm.Get("id")), fmt.Errorf("id: want a connection id")
	}
	return "close connection " + strconv.FormatUint(id, 10), h.cfg.Actions.CloseConn(id)
}
