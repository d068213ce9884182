// Command cert-manager-controller runs cert-manager's own controllers out of cluster.
//
// cert-manager's cmd/controller is a separate Go module whose path
// (github.com/cert-manager/cert-manager/controller-binary) does not match its directory,
// so the Go module proxy cannot serve it. This small entry point builds the same
// controllers from the published root module github.com/cert-manager/cert-manager:
// each controller package registers itself with pkg/controller on import, and this
// program constructs and runs the ones the local tests need (self-signed and CA
// issuers, the certificates pipeline, the CertificateRequest approver).
// Built by hack/cert-manager-binaries.sh; never part of the Python package.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	controllerpkg "github.com/cert-manager/cert-manager/pkg/controller"
	logf "github.com/cert-manager/cert-manager/pkg/logs"

	// Controllers register themselves in init().
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/approver"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/ca"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/selfsigned"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/issuing"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/keymanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/readiness"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/requestmanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/revisionmanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/trigger"
	_ "github.com/cert-manager/cert-manager/pkg/controller/clusterissuers"
	_ "github.com/cert-manager/cert-manager/pkg/controller/issuers"
	// Issuer implementations used by the issuers/clusterissuers controllers.
	_ "github.com/cert-manager/cert-manager/pkg/issuer/ca"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/selfsigned"
)

func main() {
	kubeconfig := flag.String("kubeconfig", "", "path to a kubeconfig for the API server")
	clusterNS := flag.String("cluster-resource-namespace", "cert-manager", "namespace for ClusterIssuer secrets")
	namespace := flag.String("namespace", "", "limit to one namespace (empty: all)")
	_ = flag.Bool("leader-elect", false, "accepted for compatibility; leader election is never used")
	workers := flag.Int("workers", 5, "workers per controller")
	flag.Parse()

	logf.InitLogs()
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	ctx = logf.NewContext(ctx, logf.Log, "cert-manager-controller")

	opts := controllerpkg.ContextOptions{
		Kubeconfig:         *kubeconfig,
		KubernetesAPIQPS:   50,
		KubernetesAPIBurst: 100,
		Namespace:          *namespace,
		IssuerOptions: controllerpkg.IssuerOptions{
			ClusterResourceNamespace: *clusterNS,
		},
		CertificateOptions: controllerpkg.CertificateOptions{
			CertificateRequestMinimumBackoffDuration: time.Hour,
			CertificateRequestMaximumBackoffDuration: 32 * time.Hour,
		},
	}
	factory, err := controllerpkg.NewContextFactory(ctx, opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "building controller context: %v\n", err)
		os.Exit(1)
	}

	names := make([]string, 0)
	for n := range controllerpkg.Known() {
		names = append(names, n)
	}
	sort.Strings(names)
	var wg sync.WaitGroup
	for _, n := range names {
		iface, err := controllerpkg.Known()[n](factory)
		if err != nil {
			fmt.Fprintf(os.Stderr, "constructing controller %s: %v\n", n, err)
			os.Exit(1)
		}
		wg.Add(1)
		go func(n string, c controllerpkg.Interface) {
			defer wg.Done()
			if err := c.Run(*workers, ctx); err != nil {
				fmt.Fprintf(os.Stderr, "controller %s: %v\n", n, err)
				os.Exit(1)
			}
		}(n, iface)
	}
	// Informer factories are shared by every Context the factory builds.
	shared, err := factory.Build()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building shared context: %v\n", err)
		os.Exit(1)
	}
	shared.SharedInformerFactory.Start(ctx.Done())
	shared.KubeSharedInformerFactory.Start(ctx.Done())
	shared.HTTP01ResourceMetadataInformersFactory.Start(ctx.Done())
	fmt.Fprintf(os.Stderr, "cert-manager controllers running: %s\n", strings.Join(names, ","))
	wg.Wait()
}
