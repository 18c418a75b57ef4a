// Command conformance drives a KMS v2 plugin through kube-apiserver's own
// KMS v2 client and envelope transformer (k8s.io/apiserver), so the plugin is
// judged by the code that will actually call it in a cluster, not by a
// re-implementation of the protocol.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"flag"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/apiserver/pkg/storage/value"
	"k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2"
	kmstypes "k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2/v2"
	kmsservice "k8s.io/kms/pkg/service"
)

const (
	providerName = "kms-broker-conformance"
	// storagePrefix is what kube-apiserver prepends to every KMS v2 value in etcd.
	storagePrefix = "k8s:enc:kms:v2:" + providerName + ":"
	// writeDEKSourceMaxTTL mirrors the apiserver's (unexported)
	// kmsv2PluginWriteDEKSourceMaxTTL: how long a DEK seed may be used for writes.
	writeDEKSourceMaxTTL = 3 * time.Minute
	// writers is the number of simulated kube-apiservers sharing the plugin (an HA
	// control plane). Each has its own DEK seed, so a cold cache needs one Decrypt
	// RPC per writer and key, which exercises Decrypt more than once.
	writers      = 3
	pollInterval = 100 * time.Millisecond
)

// fail reports which step failed and why, and exits 1.
func fail(step, format string, args ...any) {
	fmt.Fprintf(os.Stderr, "conformance: FAIL: step %s: %s\n", step, fmt.Sprintf(format, args...))
	os.Exit(1)
}

func must(step string, err error, what string) {
	if err != nil {
		fail(step, "%s: %v", what, err)
	}
}

func logf(format string, args ...any) { fmt.Fprintf(os.Stderr, "conformance: "+format+"\n", args...) }

// countingService wraps the apiserver's gRPC client to count RPCs, so we can
// prove reads through a cold cache really reached the plugin.
type countingService struct {
	kmsservice.Service
	encrypts, decrypts atomic.Int64
}

func (c *countingService) Encrypt(ctx context.Context, uid string, data []byte) (*kmsservice.EncryptResponse, error) {
	c.encrypts.Add(1)
	return c.Service.Encrypt(ctx, uid, data)
}

func (c *countingService) Decrypt(ctx context.Context, uid string, req *kmsservice.DecryptRequest) ([]byte, error) {
	c.decrypts.Add(1)
	return c.Service.Decrypt(ctx, uid, req)
}

// writer is one simulated kube-apiserver: a long-lived envelope transformer
// whose state is swapped on key_id change, as the apiserver's KMS probe does.
type writer struct {
	state       kmsv2.State
	transformer value.Transformer
}

func (w *writer) stateFunc() (kmsv2.State, error) { return w.state, nil }

type record struct {
	key, keyID    string
	plain, stored []byte
	dekSource     string // encryptedDEKSource from the stored EncryptedObject
	stale         bool   // expected stale flag on read: true once key_id has rotated
}

type checker struct {
	ctx  context.Context
	svc  *countingService
	seen map[string]bool // every key_id observed, to detect a reused one
}

// status fetches and validates the plugin's Status.
func (c *checker) status(step string) string {
	st, err := c.svc.Status(c.ctx)
	must(step, err, "Status RPC failed")
	return validateStatus(step, st)
}

// validateStatus mirrors isKMSv2ProviderHealthyAndMaybeRotateDEK's checks.
func validateStatus(step string, st *kmsservice.StatusResponse) string {
	if st.Version != kmsv2.KMSAPIVersionv2 && st.Version != kmsv2.KMSAPIVersionv2beta1 {
		fail(step, "Status version is %q, want %q or %q", st.Version, kmsv2.KMSAPIVersionv2, kmsv2.KMSAPIVersionv2beta1)
	}
	if st.Healthz != "ok" {
		fail(step, "Status healthz is %q, want \"ok\"", st.Healthz)
	}
	if _, err := kmsv2.ValidateKeyID(st.KeyID); err != nil {
		fail(step, "Status key_id invalid: %v", err)
	}
	return st.KeyID
}

// newState does what rotateDEKOnKeyIDChange does on a new status key_id:
// generate a DEK seed, have the plugin encrypt it, and accept it only if the
// Encrypt key_id matches the Status key_id (otherwise the apiserver discards it).
func (c *checker) newState(step, statusKeyID string) kmsv2.State {
	uid := string(uuid.NewUUID())
	tr, obj, cacheKey, err := kmsv2.GenerateTransformer(c.ctx, uid, c.svc, true)
	must(step, err, "GenerateTransformer (Encrypt of a DEK seed)")
	if obj.KeyID != statusKeyID {
		fail(step, "Encrypt returned key_id %q but Status reported %q; kube-apiserver would discard this DEK", obj.KeyID, statusKeyID)
	}
	return kmsv2.State{
		Transformer:                           tr,
		EncryptedObjectKeyID:                  obj.KeyID,
		EncryptedObjectEncryptedDEKSource:     obj.EncryptedDEKSource,
		EncryptedObjectAnnotations:            obj.Annotations,
		EncryptedObjectEncryptedDEKSourceType: obj.EncryptedDEKSourceType,
		UID:                                   uid,
		ExpirationTimestamp:                   time.Now().Add(writeDEKSourceMaxTTL),
		CacheKey:                              cacheKey,
		KMSProviderName:                       providerName,
	}
}

// seed (re)seeds every writer for keyID and checks the plugin gave each
// writer a distinct encrypted DEK source (same ciphertext for different seeds
// would mean Decrypt could not tell them apart).
func (c *checker) seed(step string, ws []*writer, keyID string) {
	distinct := map[string]bool{}
	for _, w := range ws {
		w.state = c.newState(step, keyID)
		distinct[string(w.state.EncryptedObjectEncryptedDEKSource)] = true
	}
	if len(distinct) != len(ws) {
		fail(step, "plugin returned identical ciphertexts for %d different DEK seeds", len(ws)-len(distinct)+1)
	}
	c.seen[keyID] = true
}

func newTransformer(svc kmsservice.Service, stateFunc kmsv2.StateFunc, apiServerID string) value.Transformer {
	env := kmsv2.NewEnvelopeTransformer(svc, providerName, stateFunc, apiServerID)
	return value.NewPrefixTransformers(nil, value.PrefixTransformer{Prefix: []byte(storagePrefix), Transformer: env})
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return b
}

func (c *checker) write(step string, ws []*writer, recs []record, n int, keyID string, stale bool) []record {
	for i := range n {
		idx := len(recs)
		r := record{key: fmt.Sprintf("/registry/secrets/conformance/value-%d", idx), keyID: keyID, plain: randomBytes(100 + mrand.IntN(201)), stale: stale}
		var err error
		r.stored, err = ws[idx%len(ws)].transformer.TransformToStorage(c.ctx, r.plain, value.DefaultContext(r.key))
		must(step, err, fmt.Sprintf("TransformToStorage of value %d", i))
		r.dekSource = checkStored(step, r)
		recs = append(recs, r)
	}
	return recs
}

// checkStored decodes the stored bytes with the apiserver's own EncryptedObject
// and returns its encryptedDEKSource.
func checkStored(step string, r record) string {
	if !bytes.HasPrefix(r.stored, []byte(storagePrefix)) {
		fail(step, "%s: stored value lacks prefix %q", r.key, storagePrefix)
	}
	var obj kmstypes.EncryptedObject
	must(step, proto.Unmarshal(r.stored[len(storagePrefix):], &obj), r.key+": stored value is not an EncryptedObject")
	// Validates encryptedDEKSource (non-empty, <= 1 KiB), keyID and annotations.
	must(step, kmsv2.ValidateEncryptedObject(&obj), r.key+": invalid EncryptedObject")
	if obj.KeyID != r.keyID {
		fail(step, "%s: stored keyID %q, want Status key_id %q", r.key, obj.KeyID, r.keyID)
	}
	if bytes.Contains(r.stored, r.plain) {
		fail(step, "%s: plaintext appears verbatim in the stored value", r.key)
	}
	return string(obj.EncryptedDEKSource)
}

// readAll reads every record through tr and returns how many Decrypt RPCs it took.
func (c *checker) readAll(step string, tr value.Transformer, recs []record) int64 {
	before := c.svc.decrypts.Load()
	for _, r := range recs {
		got, stale, err := tr.TransformFromStorage(c.ctx, r.stored, value.DefaultContext(r.key))
		must(step, err, r.key+": TransformFromStorage")
		if !bytes.Equal(got, r.plain) {
			fail(step, "%s: read back %d bytes that differ from the %d bytes written", r.key, len(got), len(r.plain))
		}
		if stale != r.stale {
			fail(step, "%s (key_id %q): stale=%v, want %v", r.key, r.keyID, stale, r.stale)
		}
	}
	return c.svc.decrypts.Load() - before
}

// coldRead reads through a brand-new transformer whose DEK cache is empty, so
// every distinct DEK source costs a real Decrypt RPC to the plugin.
func (c *checker) coldRead(step string, stateFunc kmsv2.StateFunc, recs []record) {
	sources := map[string]bool{}
	for _, r := range recs {
		sources[r.dekSource] = true
	}
	rpcs := c.readAll(step, newTransformer(c.svc, stateFunc, "cold-reader"), recs)
	if rpcs < int64(len(sources)) {
		fail(step, "cold-cache read made %d Decrypt RPCs for %d distinct DEK sources", rpcs, len(sources))
	}
}

func (c *checker) rotate(step, command, oldKeyID string, wait time.Duration) string {
	cctx, cancel := context.WithTimeout(c.ctx, wait)
	defer cancel()
	cmd := exec.CommandContext(cctx, "sh", "-c", command)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr // stdout is reserved for the JSON summary
	must(step, cmd.Run(), fmt.Sprintf("rotate command %q", command))

	deadline := time.Now().Add(wait)
	var lastErr error
	for i := 0; i <= int(wait/pollInterval) && time.Now().Before(deadline); i++ {
		sctx, scancel := context.WithDeadline(c.ctx, deadline)
		st, err := c.svc.Status(sctx)
		scancel()
		if err == nil && st.KeyID != oldKeyID {
			newKeyID := validateStatus(step, st)
			if c.seen[newKeyID] {
				fail(step, "key_id after rotation %q was already used before", newKeyID)
			}
			return newKeyID
		}
		lastErr = err
		time.Sleep(pollInterval)
	}
	fail(step, "Status key_id still %q %v after the rotate command (last Status error: %v)", oldKeyID, wait, lastErr)
	return ""
}

// foreignDecrypt checks the plugin refuses ciphertexts it did not produce.
func (c *checker) foreignDecrypt(step, keyID string, genuine []byte) {
	// Flipping every bit of the last byte breaks an AEAD tag in a binary format
	// and the syntax of a text (base64/JSON) one.
	tampered := bytes.Clone(genuine)
	tampered[len(tampered)-1] ^= 0xff
	cases := []struct {
		name string
		ct   []byte
	}{{"64 random bytes", randomBytes(64)}, {"a genuine DEK ciphertext with its last byte flipped", tampered}}
	for _, tc := range cases {
		pt, err := c.svc.Decrypt(c.ctx, string(uuid.NewUUID()), &kmsservice.DecryptRequest{Ciphertext: tc.ct, KeyID: keyID})
		if err == nil {
			fail(step, "Decrypt of %s with key_id %q succeeded (returned %d bytes); it must fail", tc.name, keyID, len(pt))
		}
	}
	c.status(step) // the plugin must survive bad input
}

func main() {
	endpoint := flag.String("endpoint", "", "plugin endpoint, unix:///abs/path/kms.sock (required)")
	rotateCmd := flag.String("rotate-command", "", "shell command (sh -c) that rotates the plugin's key (required)")
	n := flag.Int("values", 200, "values to write before and again after rotation")
	timeout := flag.Duration("timeout", 3*time.Second, "per-RPC timeout passed to NewGRPCService (apiserver default 3s)")
	keyIDWait := flag.Duration("key-id-wait", 30*time.Second, "how long to wait for key_id to change after rotation")
	flag.Parse()
	if !strings.HasPrefix(*endpoint, "unix:///") || *rotateCmd == "" || *n < 1 || *timeout <= 0 || *keyIDWait <= 0 {
		fmt.Fprintln(os.Stderr, "conformance: --endpoint unix:///abs/path and --rotate-command are required; --values, --timeout, --key-id-wait must be positive")
		flag.Usage()
		os.Exit(2)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel() // also closes the gRPC connection
	grpcSvc, err := kmsv2.NewGRPCService(ctx, *endpoint, providerName, *timeout)
	must("0 connect", err, "NewGRPCService")
	c := &checker{ctx: ctx, svc: &countingService{Service: grpcSvc}, seen: map[string]bool{}}

	keyBefore := c.status("1 status")
	logf("step 1 ok: key_id %q", keyBefore)

	ws := make([]*writer, writers)
	for i := range ws {
		w := &writer{}
		w.transformer = newTransformer(c.svc, w.stateFunc, fmt.Sprintf("apiserver-%d", i))
		ws[i] = w
	}
	c.seed("2 seed", ws, keyBefore)
	logf("step 2 ok: %d DEK seeds encrypted under key_id %q", writers, keyBefore)

	recs := c.write("3 write", ws, nil, *n, keyBefore, false)
	for i := range recs {
		// Each writer reads its own values back, through its warm DEK cache.
		c.readAll("3 read", ws[i%writers].transformer, recs[i:i+1])
	}
	logf("step 3 ok: %d values written and read back", len(recs))

	c.coldRead("4 cold read", ws[0].stateFunc, recs)
	logf("step 4 ok: read through an empty DEK cache")

	for i := range recs {
		recs[i].stale = true // once key_id changes these must read back as stale
	}
	keyAfter := c.rotate("5 rotate", *rotateCmd, keyBefore, *keyIDWait)
	logf("step 5 ok: key_id rotated to %q", keyAfter)

	c.seed("6 reseed", ws, keyAfter)
	recs = c.write("6 write", ws, recs, *n, keyAfter, false)
	logf("step 6 ok: %d more values under key_id %q", *n, keyAfter)

	c.coldRead("7 cold read", ws[0].stateFunc, recs)
	logf("step 7 ok: all %d values read through an empty DEK cache", len(recs))

	c.foreignDecrypt("8 foreign decrypt", keyAfter, ws[0].state.EncryptedObjectEncryptedDEKSource)
	logf("step 8 ok: foreign ciphertexts rejected, plugin still healthy")

	out, _ := json.Marshal(struct {
		KeyIDBefore string `json:"status_key_id_before"`
		KeyIDAfter  string `json:"status_key_id_after"`
		Values      int    `json:"values"`
		EncryptRPCs int64  `json:"encrypt_rpcs"`
		DecryptRPCs int64  `json:"decrypt_rpcs"` // including the two that must fail
		OK          bool   `json:"ok"`
	}{keyBefore, keyAfter, len(recs), c.svc.encrypts.Load(), c.svc.decrypts.Load(), true})
	fmt.Println(string(out))
}
