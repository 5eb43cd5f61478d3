package caddymodule

import (
	"slices"
	"sync"

	"github.com/crudauth/caddy-crudauth/internal/password"
	"github.com/crudauth/caddy-crudauth/internal/users"
)

// liveHandlers records, per store (its pool key), the handlers that are
// provisioned and not yet cleaned up, in provisioning order. The admin API
// hashes new passwords with the settings of the most recently provisioned
// handler of the database it works on: after a reload that is the new
// config, and an operator who set argon2 parameters or a password policy on
// the gateway gets the same ones through the admin API. With no handler
// (the database is only held by something else), the defaults apply.
var liveHandlers = struct {
	sync.Mutex
	m map[string][]*Handler
}{m: map[string][]*Handler{}}

func (h *Handler) registerLive() {
	if h.dbKey == "" {
		return
	}
	liveHandlers.Lock()
	liveHandlers.m[h.dbKey] = append(liveHandlers.m[h.dbKey], h)
	liveHandlers.Unlock()
}

func (h *Handler) unregisterLive() {
	liveHandlers.Lock()
	defer liveHandlers.Unlock()
	for key, hs := range liveHandlers.m {
		if i := slices.Index(hs, h); i >= 0 {
			hs = slices.Delete(hs, i, i+1)
			if len(hs) == 0 {
				delete(liveHandlers.m, key)
			} else {
				liveHandlers.m[key] = hs
			}
		}
	}
}

var (
	defaultSettingsOnce sync.Once
	defaultSettings     users.Settings
	defaultSettingsErr  error
)

// settingsFor returns the password settings for the store with pool key path.
func settingsFor(path string) (users.Settings, error) {
	liveHandlers.Lock()
	hs := liveHandlers.m[path]
	var h *Handler
	if len(hs) > 0 {
		h = hs[len(hs)-1]
	}
	liveHandlers.Unlock()
	if h != nil {
		return users.Settings{Policy: h.policy, Hasher: h.hasher, Limiter: h.hashLimit}, nil
	}
	defaultSettingsOnce.Do(func() {
		hasher, err := password.NewHasher(password.DefaultParams)
		if err != nil {
			defaultSettingsErr = err
			return
		}
		defaultSettings = users.Settings{Policy: password.DefaultPolicy, Hasher: hasher.WithObserver(observeHash)}
	})
	return defaultSettings, defaultSettingsErr
}
