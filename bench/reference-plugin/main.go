// A reference KMS v2 plugin for the benchmark: the upstream server helper
// (k8s.io/kms/pkg/service) over a PKCS#11 AES-GCM key, wrapped the way the upstream mock
// plugin does it (crypto11, a random nonce, the key_id as associated data, nonce‖ciphertext).
// It exists only so that `npm run bench` can put kms-broker's figures beside a plain Go plugin
// on the same SoftHSM token; it has no failover, no rotation and no envelope versioning.
package main

import (
	"context"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/ThalesGroup/crypto11"
	"k8s.io/kms/pkg/service"
)

const annotationKey = "version.encryption.remote.io"

type plugin struct {
	aead  cipher.AEAD
	keyID string
}

func (p *plugin) Status(context.Context) (*service.StatusResponse, error) {
	return &service.StatusResponse{Version: "v2", Healthz: "ok", KeyID: p.keyID}, nil
}

func (p *plugin) Encrypt(_ context.Context, _ string, data []byte) (*service.EncryptResponse, error) {
	nonce := make([]byte, p.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	sealed := p.aead.Seal(nonce, nonce, data, []byte(p.keyID))
	return &service.EncryptResponse{
		Ciphertext:  sealed,
		KeyID:       p.keyID,
		Annotations: map[string][]byte{annotationKey: []byte("1")},
	}, nil
}

func (p *plugin) Decrypt(_ context.Context, _ string, req *service.DecryptRequest) ([]byte, error) {
	if string(req.Annotations[annotationKey]) != "1" {
		return nil, errors.New("unknown annotation version")
	}
	if req.KeyID != p.keyID {
		return nil, fmt.Errorf("unknown key_id %q", req.KeyID)
	}
	size := p.aead.NonceSize()
	if len(req.Ciphertext) <= size {
		return nil, errors.New("ciphertext too short")
	}
	return p.aead.Open(nil, req.Ciphertext[:size], req.Ciphertext[size:], []byte(p.keyID))
}

func main() {
	socket := flag.String("socket", "", "unix socket to serve on")
	module := flag.String("module", "/usr/lib/softhsm/libsofthsm2.so", "PKCS#11 module")
	tokenLabel := flag.String("token-label", "", "token label")
	pinFile := flag.String("pin-file", "", "file holding the user PIN")
	keyLabel := flag.String("key-label", "reference-kek", "AES key label (generated if missing)")
	flag.Parse()

	pin, err := os.ReadFile(*pinFile)
	if err != nil {
		log.Fatalf("read PIN: %v", err)
	}
	ctx, err := crypto11.Configure(&crypto11.Config{
		Path:       *module,
		TokenLabel: *tokenLabel,
		Pin:        strings.TrimSpace(string(pin)),
	})
	if err != nil {
		log.Fatalf("configure PKCS#11: %v", err)
	}
	defer ctx.Close()

	var key *crypto11.SecretKey
	keys, err := ctx.FindKeys(nil, []byte(*keyLabel))
	if err == nil && len(keys) > 0 {
		key = keys[0]
	} else if err == nil {
		id := make([]byte, 16)
		if _, err = rand.Read(id); err == nil {
			key, err = ctx.GenerateSecretKeyWithLabel(id, []byte(*keyLabel), 256, crypto11.CipherAES)
		}
	}
	if err != nil {
		log.Fatalf("find or generate key %q: %v", *keyLabel, err)
	}
	aead, err := key.NewGCM()
	if err != nil {
		log.Fatalf("AES-GCM: %v", err)
	}

	server := service.NewGRPCService(*socket, 3*time.Second, &plugin{aead: aead, keyID: "reference-" + *keyLabel})
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		server.Shutdown()
	}()
	_ = os.Remove(*socket)
	log.Printf("reference plugin serving on %s", *socket)
	if err := server.ListenAndServe(); err != nil && !errors.Is(err, context.Canceled) {
		log.Printf("serve: %v", err)
	}
}
