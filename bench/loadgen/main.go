// Command loadgen drives the benchmark. Sub-commands:
//
//	cps     -addr A [-ssh-addr B] -c C -d D      closed loop: connect, first flight, read reply to EOF, close
//	latency -addr A -rate R -d D [-hold N]       open loop (no coordinated omission): planned start → first byte,
//	                                             with N routed connections held idle meanwhile (-hold); SIGTERM
//	                                             or SIGINT ends the load before D (the e2e upgrade test's end)
//	bulk    -addr A -streams S -bytes N          download N bytes per stream, GiB/s
//	idle    -addr A -n N -pid P                  hold N routed connections, report the RSS growth of P
//	cpu     -addr A -n N -c C -pid P             CPU seconds P spends per 100k connections
//	dns     -addr A -c C -d D [-newport]         closed-loop DNS queries over UDP, queries/s and lost; -newport:
//	                                             a new source port per query, as a recursive resolver
//	udpidle -addr A -n N -pid P [-srcs S]        hold N answered UDP (DNS) flows, report the RSS growth of P
//	tls     -addr A -sni NAME -c C -d D          closed loop like cps, each connection sending a real TLS
//	                                             ClientHello (Go's, for NAME) with its own random and session
//	                                             ID, reading the backend's reply to EOF (bench/backend -byte);
//	                                             with -pid P also the CPU time P spent per connection
//
// Every mode prints one line of key=value pairs for bench/run.sh. idle and
// cpu read the measured process's figures from /proc, so they need Linux.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	httpFlight = "GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: loadgen\r\n\r\n"
	sshFlight  = "SSH-2.0-loadgen\r\n"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: loadgen cps|latency|bulk|idle|cpu|dns|udpidle [flags]")
		os.Exit(2)
	}
	raiseNoFile()
	mode, args := os.Args[1], os.Args[2:]
	fs := flag.NewFlagSet(mode, flag.ExitOnError)
	addr := fs.String("addr", "", "HTTP address (the mux port, or the backend's HTTP port for direct)")
	sshAddr := fs.String("ssh-addr", "", "address for SSH flights (default: -addr)")
	sshShare := fs.Int("ssh-percent", 10, "share of connections sending an SSH banner")
	conc := fs.Int("c", 64, "concurrency")
	dur := fs.Duration("d", 5*time.Second, "duration")
	rate := fs.Int("rate", 2000, "connections per second (latency)")
	streams := fs.Int("streams", 1, "streams (bulk)")
	nbytes := fs.Int64("bytes", 1<<30, "bytes per stream (bulk)")
	n := fs.Int("n", 1000, "connections (idle, cpu)")
	hold := fs.Int("hold", 0, "routed connections held idle while measuring (latency)")
	pid := fs.Int("pid", 0, "process to measure (idle, cpu, udpidle, tls)")
	name := fs.String("name", "example.test", "name asked (dns, udpidle)")
	newPort := fs.Bool("newport", false, "a new source port per query (dns)")
	timeout := fs.Duration("timeout", time.Second, "an answer later than this is lost (dns)")
	srcs := fs.Int("srcs", 200, "source addresses 127.0.1.2 and on (udpidle)")
	sni := fs.String("sni", "bench.example", "server name of the ClientHello (tls)")
	fs.Parse(args)
	if *sshAddr == "" {
		*sshAddr = *addr
	}
	switch mode {
	case "cps":
		cps(*addr, *sshAddr, *sshShare, *conc, *dur)
	case "latency":
		stop := make(chan os.Signal, 1)
		signal.Notify(stop, syscall.SIGTERM, os.Interrupt)
		latency(os.Stdout, *addr, *rate, *dur, *hold, stop)
	case "bulk":
		bulk(*addr, *streams, *nbytes)
	case "idle":
		idle(*addr, *n, *pid)
	case "cpu":
		cpu(*addr, *sshAddr, *sshShare, *n, *conc, *pid)
	case "dns":
		dnsLoad(*addr, *name, *conc, *dur, *timeout, *newPort)
	case "udpidle":
		udpIdle(*addr, *name, *n, min(max(*srcs, 1), 250), *pid)
	case "tls":
		tlsCPS(*addr, *sni, *conc, *dur, *pid)
	default:
		fmt.Fprintln(os.Stderr, "unknown mode", mode)
		os.Exit(2)
	}
}

// once does one connection: connect, send the flight, read to EOF.
func once(addr, flight string, buf []byte) (firstByte time.Duration, err error) {
	start := time.Now()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, flight); err != nil {
		return 0, err
	}
	got := 0
	for {
		m, err := c.Read(buf)
		if m > 0 && got == 0 {
			firstByte = time.Since(start)
		}
		got += m
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, err
		}
	}
	if got == 0 {
		return 0, fmt.Errorf("empty reply")
	}
	return firstByte, nil
}

func pick(i int, addr, sshAddr string, sshShare int) (string, string) {
	if i%100 < sshShare {
		return sshAddr, sshFlight
	}
	return addr, httpFlight
}

// cps is the closed loop: conc workers for d, then the rate of connections.
func cps(addr, sshAddr string, sshShare, conc int, d time.Duration) {
	deadline := time.Now().Add(d)
	start := time.Now()
	ok, errs, firstErr := drive(addr, sshAddr, sshShare, conc, func(int64) bool { return time.Now().Before(deadline) })
	el := time.Since(start).Seconds()
	fmt.Printf("cps=%.0f ok=%d errors=%d seconds=%.2f first_error=%q\n", float64(ok)/el, ok, errs, el, firstErr)
}

// drive runs conc workers that each do one connection after another (see
// once) while more allows the i-th connection of all (counted from 1):
// sshShare in 100 send an SSH banner to sshAddr, the others an HTTP request
// to addr. It returns how many succeeded and failed, and the first error.
func drive(addr, sshAddr string, sshShare, conc int, more func(i int64) bool) (ok, errs int64, firstErr string) {
	var next, okN, errN atomic.Int64
	var first atomic.Value
	var wg sync.WaitGroup
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 4096)
			for i := next.Add(1); more(i); i = next.Add(1) {
				a, f := pick(int(i), addr, sshAddr, sshShare)
				if _, err := once(a, f, buf); err != nil {
					errN.Add(1)
					first.CompareAndSwap(nil, err.Error())
					continue
				}
				okN.Add(1)
			}
		}()
	}
	wg.Wait()
	firstErr, _ = first.Load().(string)
	return okN.Load(), errN.Load(), firstErr
}

// latency measures at rate for d; with hold > 0 it first opens hold routed
// connections and keeps them idle until the measurement ends, and reports
// how many it held (all of them, or the figures do not describe that load).
// A value on stop (SIGTERM or SIGINT) ends the load early: the
// connections started finish and the figures describe them (a caller
// stops the load when what it measured is over rather than guessing its
// length as d). It writes its one line to w.
func latency(w io.Writer, addr string, rate int, d time.Duration, hold int, stop <-chan os.Signal) {
	var conns []net.Conn
	held := 0
	if hold > 0 {
		var errs int
		conns, held, errs = holdConns(addr, hold)
		defer closeAll(conns)
		fmt.Fprintf(w, "held=%d hold_errors=%d ", held, errs)
	}
	total := int(float64(rate) * d.Seconds())
	interval := time.Second / time.Duration(rate)
	lat := make([]time.Duration, total)
	var errs atomic.Int64
	var first atomic.Value
	var wg sync.WaitGroup
	var behind time.Duration // the most a start came after its planned time
	pace := time.NewTimer(0)
	start := time.Now()
	n := 0 // connections started
pacing:
	for ; n < total; n++ {
		planned := start.Add(time.Duration(n) * interval)
		pace.Reset(time.Until(planned)) // pacing the open loop, not synchronisation
		select {
		case <-pace.C:
		case <-stop:
			break pacing
		}
		behind = max(behind, time.Since(planned))
		wg.Add(1)
		go func(i int, planned time.Time) {
			defer wg.Done()
			buf := make([]byte, 4096)
			if _, err := once(addr, httpFlight, buf); err != nil {
				errs.Add(1)
				first.CompareAndSwap(nil, err.Error())
				lat[i] = -1
				return
			}
			// From the planned start: a late start (generator behind) counts.
			lat[i] = time.Since(planned)
		}(n, planned)
	}
	started := time.Since(start) // all started: the rate the generator held is n over it
	wg.Wait()
	var ok []time.Duration
	for _, l := range lat[:n] {
		if l >= 0 {
			ok = append(ok, l)
		}
	}
	slices.Sort(ok)
	q := func(p float64) float64 {
		if len(ok) == 0 {
			return 0
		}
		return float64(ok[min(len(ok)-1, int(p*float64(len(ok))))].Microseconds())
	}
	firstErr, _ := first.Load().(string)
	if hold > 0 {
		fmt.Fprintf(w, "held_alive=%d ", alive(conns))
	}
	// started_per_s and behind_max_ms say whether the generator held the
	// rate: a start behind its plan by more than a few ms was a start the
	// rate did not get at that moment.
	fmt.Fprintf(w, "started=%d started_per_s=%.0f behind_max_ms=%.1f ", n, float64(max(n-1, 0))/max(started.Seconds(), 1e-9), float64(behind.Microseconds())/1000)
	fmt.Fprintf(w, "p50_us=%.0f p99_us=%.0f p999_us=%.0f n=%d errors=%d first_error=%q\n", q(.50), q(.99), q(.999), len(ok), errs.Load(), firstErr)
}

func bulk(addr string, streams int, n int64) {
	var wg sync.WaitGroup
	var total atomic.Int64
	var errs atomic.Int64
	start := time.Now()
	for s := 0; s < streams; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				errs.Add(1)
				return
			}
			defer c.Close()
			fmt.Fprintf(c, "GET /bulk?bytes=%d HTTP/1.1\r\nHost: bench\r\n\r\n", n)
			m, _ := io.Copy(io.Discard, c)
			total.Add(m)
		}()
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	fmt.Printf("gibps=%.3f bytes=%d seconds=%.2f errors=%d\n", float64(total.Load())/el/(1<<30), total.Load(), el, errs.Load())
}

func rssKiB(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			v, _ := strconv.ParseInt(strings.Fields(l)[1], 10, 64)
			return v
		}
	}
	return -1
}

// holdConns opens n connections that ask the backend to keep them open
// ("GET /hold") and waits for each reply head: a connection whose head
// arrived has been routed and forwarded, and stays open until closed. It
// returns the connections opened, how many were routed, and how many
// failed to connect.
func holdConns(addr string, n int) (conns []net.Conn, held, errs int) {
	conns = make([]net.Conn, 0, n)
	for i := 0; i < n; i++ {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			errs++
			continue
		}
		io.WriteString(c, "GET /hold HTTP/1.1\r\nHost: bench\r\n\r\n")
		conns = append(conns, c)
	}
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if readHead(c) == nil {
			held++
		}
		c.SetReadDeadline(time.Time{})
	}
	return conns, held, errs
}

// readHead reads a response head to its blank line, a byte at a time, so
// nothing after it (the echo alive checks) is taken from the connection.
func readHead(c net.Conn) error {
	var line []byte
	b := make([]byte, 1)
	for n := 0; n < 4096; n++ {
		if _, err := c.Read(b); err != nil {
			return err
		}
		line = append(line, b[0])
		if b[0] != '\n' {
			continue
		}
		if len(line) <= 2 && n > 2 { // "\r\n" after the status line
			return nil
		}
		line = line[:0]
	}
	return errors.New("response head too long")
}

// alive counts the held connections that still answer end to end: a byte
// sent comes back (the backend echoes what follows /hold). Closed, reset
// or silent for 10 s, a connection does not count.
func alive(conns []net.Conn) int {
	var n atomic.Int64
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() {
			if _, err := c.Write([]byte("x")); err != nil {
				return
			}
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			b := make([]byte, 1)
			if _, err := io.ReadFull(c, b); err == nil && b[0] == 'x' {
				n.Add(1)
			}
		})
	}
	wg.Wait()
	return int(n.Load())
}

func closeAll(conns []net.Conn) {
	for _, c := range conns {
		c.Close()
	}
}

func idle(addr string, n, pid int) {
	before := rssKiB(pid)
	conns, held, errs := holdConns(addr, n)
	defer closeAll(conns)
	after := rssKiB(pid)
	per := "failed" // the process died or refused connections: no figure
	if held == n && before > 0 && after > 0 {
		per = fmt.Sprintf("%.2f", float64(after-before)/float64(held))
	}
	fmt.Printf("held=%d errors=%d rss_before_kib=%d rss_after_kib=%d kib_per_conn=%s\n", held, errs, before, after, per)
}

func cpuTicks(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	// utime, stime, and cutime, cstime of waited-for children.
	var sum float64
	for _, i := range []int{11, 12, 13, 14} {
		v, _ := strconv.ParseFloat(f[i], 64)
		sum += v
	}
	return sum / 100 // USER_HZ
}

// cpu is the CPU time pid spends on n connections from conc workers.
func cpu(addr, sshAddr string, sshShare, n, conc, pid int) {
	before := cpuTicks(pid)
	_, errs, _ := drive(addr, sshAddr, sshShare, conc, func(i int64) bool { return i <= int64(n) })
	used := cpuTicks(pid) - before
	fmt.Printf("cpu_seconds=%.2f per_100k=%.2f connections=%d errors=%d\n", used, used*100000/float64(n), n, errs)
}
