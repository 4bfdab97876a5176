// A CoreDNS build with only the plugins the local cluster's DNS uses; the
// upstream main enables every plugin, including several cloud SDKs.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)

func init() {
	// Order matters: it is the order plugins are chained (as in plugin.cfg).
	dnsserver.Directives = []string{
		"reload", "bind", "health", "ready", "errors", "log",
		"cache", "loadbalance", "kubernetes", "forward",
	}
}

func main() { coremain.Run() }
