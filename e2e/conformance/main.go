// Command cni-conformance drives CNI plugin binaries through libcni, the
// reference runtime library that containerd (via go-cni) and CRI-O use.
// libcni accepting a plugin's output is the conformance proof.
//
// Usage:
//
//	cni-conformance -conflist FILE -bin-dir DIR[:DIR...] -cache-dir DIR \
//	    -netns PATH -container-id ID -ifname IF [-args K=V;K2=V2] \
//	    [-cap-args JSON] [-keep-going] [-timeout 60s] STEP [STEP...]
//
// STEP is one of validate, add, cached, check, del. Each step prints one
// line of JSON on stdout. Exit status: 0 all steps ok, 1 a step failed,
// 2 usage or setup error.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
)

// line is one JSON output line; nil pointer / nil interface fields are
// omitted, except "code" on failure which is always present (null when the
// error is not a *types.Error).
type line map[string]interface{}

func emit(l line) {
	b, err := json.Marshal(l)
	if err != nil {
		b, _ = json.Marshal(line{"step": l["step"], "ok": false,
			"error": "cni-conformance: cannot encode output: " + err.Error(), "code": nil})
	}
	fmt.Println(string(b))
}

func failLine(step string, err error) line {
	l := line{"step": step, "ok": false, "error": err.Error(), "code": nil}
	var te *types.Error
	if errors.As(err, &te) {
		l["code"] = te.Code
		l["msg"] = te.Msg
		if te.Details != "" {
			l["details"] = te.Details
		}
	}
	return l
}

func usage(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "cni-conformance: "+format+"\n", a...)
	flag.Usage()
	os.Exit(2)
}

// parseArgs turns "K=V;K2=V2" into libcni's CNI_ARGS pairs.
func parseArgs(s string) ([][2]string, error) {
	var out [][2]string
	for _, kv := range strings.Split(s, ";") {
		if kv == "" {
			continue
		}
		i := strings.IndexByte(kv, '=')
		if i <= 0 {
			return nil, fmt.Errorf("invalid -args element %q (want K=V)", kv)
		}
		out = append(out, [2]string{kv[:i], kv[i+1:]})
	}
	return out, nil
}

// encodeResult re-encodes r through libcni's types in version v.
func encodeResult(r types.Result, v string) (json.RawMessage, error) {
	conv, err := r.GetAsVersion(v)
	if err != nil {
		return nil, fmt.Errorf("libcni cannot convert result %q to list version %q: %w", r.Version(), v, err)
	}
	b, err := json.Marshal(conv)
	if err != nil {
		return nil, err
	}
	return json.RawMessage(b), nil
}

// resultLine fills a successful add/cached line: the result in the list's
// version plus the interface names and IP addresses, extracted after
// converting to the 1.0.0 types to prove the result converts.
func resultLine(step string, r types.Result, listVersion string) line {
	enc, err := encodeResult(r, listVersion)
	if err != nil {
		return failLine(step, err)
	}
	cur, err := types100.NewResultFromResult(r)
	if err != nil {
		return failLine(step, fmt.Errorf("libcni cannot convert result %q to %s: %w", r.Version(), types100.ImplementedSpecVersion, err))
	}
	ifaces := make([]string, 0, len(cur.Interfaces))
	for _, i := range cur.Interfaces {
		ifaces = append(ifaces, i.Name)
	}
	ips := make([]string, 0, len(cur.IPs))
	for _, ip := range cur.IPs {
		ips = append(ips, ip.Address.String())
	}
	return line{"step": step, "ok": true, "cniVersion": r.Version(), "result": enc,
		"interfaces": ifaces, "ips": ips}
}

func main() {
	var (
		conflist    = flag.String("conflist", "", "network configuration list file (.conflist)")
		binDir      = flag.String("bin-dir", "", "plugin directories, colon separated")
		cacheDir    = flag.String("cache-dir", "", "libcni cache directory (results/ is created below it)")
		netns       = flag.String("netns", "", "network namespace path (CNI_NETNS)")
		containerID = flag.String("container-id", "", "container ID (CNI_CONTAINERID)")
		ifName      = flag.String("ifname", "eth0", "interface name (CNI_IFNAME)")
		argsStr     = flag.String("args", "", "CNI_ARGS as K=V;K2=V2")
		capArgs     = flag.String("cap-args", "", "capability args as a JSON object, e.g. {\"portMappings\":[...]}")
		keepGoing   = flag.Bool("keep-going", false, "run the remaining steps after a failing one")
		timeout     = flag.Duration("timeout", 60*time.Second, "timeout for each step")
	)
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: %s -conflist FILE -bin-dir DIR[:DIR...] -cache-dir DIR -netns PATH -container-id ID -ifname IF [-args K=V;K2=V2] [-cap-args JSON] [-keep-going] STEP [STEP...]\nSTEP: validate | add | cached | check | del\n", filepath.Base(os.Args[0]))
		flag.PrintDefaults()
	}
	flag.Parse()

	if *conflist == "" || *binDir == "" || *cacheDir == "" {
		usage("-conflist, -bin-dir and -cache-dir are required")
	}
	steps := flag.Args()
	if len(steps) == 0 {
		usage("no STEP given")
	}
	for _, s := range steps {
		switch s {
		case "validate", "add", "cached", "check", "del":
		default:
			usage("unknown step %q", s)
		}
	}

	list, err := libcni.ConfListFromFile(*conflist)
	if err != nil {
		emit(failLine("load", err))
		os.Exit(2)
	}
	pairs, err := parseArgs(*argsStr)
	if err != nil {
		usage("%v", err)
	}
	var caps map[string]interface{}
	if *capArgs != "" {
		if err := json.Unmarshal([]byte(*capArgs), &caps); err != nil {
			usage("invalid -cap-args JSON: %v", err)
		}
	}

	// Exactly how go-cni sets libcni up: search path, cache dir, default exec.
	cninet := libcni.NewCNIConfigWithCacheDir(filepath.SplitList(*binDir), *cacheDir, nil)
	rt := &libcni.RuntimeConf{
		ContainerID:    *containerID,
		NetNS:          *netns,
		IfName:         *ifName,
		Args:           pairs,
		CapabilityArgs: caps,
	}

	failed := false
	for _, step := range steps {
		ctx, cancel := context.WithTimeout(context.Background(), *timeout)
		l := runStep(ctx, cninet, list, rt, step)
		cancel()
		emit(l)
		if ok, _ := l["ok"].(bool); !ok {
			failed = true
			if !*keepGoing {
				break
			}
		}
	}
	if failed {
		os.Exit(1)
	}
}

func runStep(ctx context.Context, cninet *libcni.CNIConfig, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf, step string) line {
	switch step {
	case "validate":
		caps, err := cninet.ValidateNetworkList(ctx, list)
		if err != nil {
			return failLine(step, err)
		}
		sort.Strings(caps)
		return line{"step": step, "ok": true, "cniVersion": list.CNIVersion, "capabilities": caps}
	case "add":
		r, err := cninet.AddNetworkList(ctx, list, rt)
		if err != nil {
			return failLine(step, err)
		}
		return resultLine(step, r, list.CNIVersion)
	case "cached":
		r, err := cninet.GetNetworkListCachedResult(list, rt)
		if err != nil {
			return failLine(step, err)
		}
		conf, crt, err := cninet.GetNetworkListCachedConfig(list, rt)
		if err != nil {
			return failLine(step, err)
		}
		var l line
		if r == nil {
			// libcni treats a missing cache file as "nothing cached".
			l = line{"step": step, "ok": true, "present": false, "result": nil}
		} else {
			l = resultLine(step, r, list.CNIVersion)
			l["present"] = true
		}
		if conf != nil {
			l["configMatches"] = string(conf) == string(list.Bytes)
			l["cachedArgs"] = crt.Args
			l["cachedCapabilityArgs"] = crt.CapabilityArgs
		}
		return l
	case "check":
		if err := cninet.CheckNetworkList(ctx, list, rt); err != nil {
			return failLine(step, err)
		}
		return line{"step": step, "ok": true}
	case "del":
		if err := cninet.DelNetworkList(ctx, list, rt); err != nil {
			return failLine(step, err)
		}
		return line{"step": step, "ok": true}
	}
	return failLine(step, fmt.Errorf("unknown step %q", step))
}
