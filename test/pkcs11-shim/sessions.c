/* The shim's session table: which sessions are open on which slot, the per-token session limit
 * (KMS_BROKER_SHIM_MAX_SESSIONS) and idle reclaim (KMS_BROKER_SHIM_IDLE_MS / _IDLE_CALLS).
 * Every call on a session goes through session_enter/session_leave, so "idle" means no call at
 * all, and a session with a call in flight is never reclaimed. See shim.c for the whole picture. */
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <time.h>
#include "shim.h"

#define TRACKED_MAX 4096

struct session {
  CK_SESSION_HANDLE handle;
  CK_SLOT_ID slot;
  unsigned long busy;       /* calls in flight: such a session is never idle */
  unsigned long last_ms;    /* monotonic time of its last use */
  unsigned long idle_calls; /* calls on other sessions since its last use */
};

static struct session sessions[TRACKED_MAX];
static size_t session_count;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static unsigned long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (unsigned long)ts.tv_sec * 1000UL + (unsigned long)ts.tv_nsec / 1000000UL;
}

/* Helpers below: callers hold `lock`. */

static struct session *find_session(CK_SESSION_HANDLE handle) {
  for (size_t i = 0; i < session_count; i++)
    if (sessions[i].handle == handle) return &sessions[i];
  return NULL;
}

static void forget_session(struct session *s) {
  *s = sessions[--session_count];
}

static unsigned long sessions_on(CK_SLOT_ID slot) {
  unsigned long n = 0;
  for (size_t i = 0; i < session_count; i++) n += sessions[i].slot == slot;
  return n;
}

static int is_idle(const struct session *s, unsigned long now) {
  if (s->busy > 0) return 0;
  if (config.idle_ms > 0 && now - s->last_ms >= config.idle_ms) return 1;
  return config.idle_calls > 0 && s->idle_calls >= config.idle_calls;
}

/* Closes every idle session in the real module, as a YubiHSM reclaims them. */
static void reclaim_idle(void) {
  unsigned long now = now_ms();
  for (size_t i = 0; i < session_count;) {
    if (is_idle(&sessions[i], now)) {
      real->C_CloseSession(sessions[i].handle);
      forget_session(&sessions[i]);
    } else {
      i++;
    }
  }
}

/* ---- the table's interface (each takes `lock` itself) ---- */

/* Start of a call on `handle`: reclaims idle sessions, counts the call against the others. */
/* A network HSM: every call on a session is a round trip to the appliance. Outside the lock,
 * so calls on different sessions overlap as they would on the wire. */
static void network_round_trip(void) {
  struct timespec wait;
  if (config.latency_us == 0) return;
  wait.tv_sec = (time_t)(config.latency_us / 1000000);
  wait.tv_nsec = (long)(config.latency_us % 1000000) * 1000;
  while (nanosleep(&wait, &wait) != 0 && errno == EINTR) {
  }
}

CK_RV session_enter(CK_SESSION_HANDLE handle) {
  struct session *s;
  network_round_trip();
  pthread_mutex_lock(&lock);
  reclaim_idle();
  s = find_session(handle);
  if (s != NULL) {
    for (size_t i = 0; i < session_count; i++) sessions[i].idle_calls += &sessions[i] != s;
    s->idle_calls = 0;
    s->busy++;
    s->last_ms = now_ms();
  }
  pthread_mutex_unlock(&lock);
  return s != NULL ? CKR_OK : CKR_SESSION_HANDLE_INVALID;
}

void session_leave(CK_SESSION_HANDLE handle) {
  struct session *s;
  pthread_mutex_lock(&lock);
  s = find_session(handle);
  if (s != NULL) {
    s->busy--;
    s->last_ms = now_ms();
  }
  pthread_mutex_unlock(&lock);
}

unsigned long sessions_count(CK_SLOT_ID slot) {
  unsigned long n;
  pthread_mutex_lock(&lock);
  n = sessions_on(slot);
  pthread_mutex_unlock(&lock);
  return n;
}

void sessions_forget_all(void) {
  pthread_mutex_lock(&lock);
  session_count = 0;
  pthread_mutex_unlock(&lock);
}

static CK_RV shim_C_OpenSession(CK_SLOT_ID slot, CK_FLAGS flags, CK_VOID_PTR app, CK_NOTIFY notify,
                                CK_SESSION_HANDLE_PTR out) {
  CK_RV rv = CKR_SESSION_COUNT;
  pthread_mutex_lock(&lock);
  reclaim_idle();
  if (session_count < TRACKED_MAX && (config.max_sessions == 0 || sessions_on(slot) < config.max_sessions)) {
    rv = real->C_OpenSession(slot, flags, app, notify, out);
    if (rv == CKR_OK) sessions[session_count++] = (struct session){*out, slot, 0, now_ms(), 0};
  }
  pthread_mutex_unlock(&lock);
  return rv;
}

static CK_RV shim_C_CloseSession(CK_SESSION_HANDLE handle) {
  CK_RV rv = session_enter(handle);
  if (rv != CKR_OK) return rv;
  pthread_mutex_lock(&lock);
  rv = real->C_CloseSession(handle);
  struct session *s = find_session(handle);
  if (s != NULL) rv == CKR_OK ? forget_session(s) : (void)s->busy--;
  pthread_mutex_unlock(&lock);
  return rv;
}

static CK_RV shim_C_CloseAllSessions(CK_SLOT_ID slot) {
  CK_RV rv;
  pthread_mutex_lock(&lock);
  rv = real->C_CloseAllSessions(slot);
  for (size_t i = 0; rv == CKR_OK && i < session_count;)
    sessions[i].slot == slot ? forget_session(&sessions[i]) : (void)i++;
  pthread_mutex_unlock(&lock);
  return rv;
}

/* Every other call on a session, as X(name, parameters, arguments). */
#define S CK_SESSION_HANDLE hSession
#define M CK_MECHANISM_PTR m
#define O CK_OBJECT_HANDLE
#define B CK_BYTE_PTR
#define L CK_ULONG
#define LP CK_ULONG_PTR
#define T CK_ATTRIBUTE_PTR
#define SESSION_CALLS(X) \
  X(C_GetSessionInfo, (S, CK_SESSION_INFO_PTR i), (hSession, i)) \
  X(C_GetOperationState, (S, B st, LP n), (hSession, st, n)) \
  X(C_SetOperationState, (S, B st, L n, O e, O a), (hSession, st, n, e, a)) \
  X(C_Login, (S, CK_USER_TYPE u, CK_UTF8CHAR_PTR pin, L n), (hSession, u, pin, n)) \
  X(C_Logout, (S), (hSession)) \
  X(C_InitPIN, (S, CK_UTF8CHAR_PTR pin, L n), (hSession, pin, n)) \
  X(C_SetPIN, (S, CK_UTF8CHAR_PTR o, L on, CK_UTF8CHAR_PTR p, L pn), (hSession, o, on, p, pn)) \
  X(C_CreateObject, (S, T t, L n, O *o), (hSession, t, n, o)) \
  X(C_CopyObject, (S, O o, T t, L n, O *c), (hSession, o, t, n, c)) \
  X(C_DestroyObject, (S, O o), (hSession, o)) \
  X(C_GetObjectSize, (S, O o, LP n), (hSession, o, n)) \
  X(C_GetAttributeValue, (S, O o, T t, L n), (hSession, o, t, n)) \
  X(C_SetAttributeValue, (S, O o, T t, L n), (hSession, o, t, n)) \
  X(C_FindObjectsInit, (S, T t, L n), (hSession, t, n)) \
  X(C_FindObjects, (S, O *o, L max, LP n), (hSession, o, max, n)) \
  X(C_FindObjectsFinal, (S), (hSession)) \
  X(C_Encrypt, (S, B d, L dn, B e, LP en), (hSession, d, dn, e, en)) \
  X(C_EncryptUpdate, (S, B d, L dn, B e, LP en), (hSession, d, dn, e, en)) \
  X(C_EncryptFinal, (S, B e, LP en), (hSession, e, en)) \
  X(C_DecryptInit, (S, M, O k), (hSession, m, k)) \
  X(C_Decrypt, (S, B e, L en, B d, LP dn), (hSession, e, en, d, dn)) \
  X(C_DecryptUpdate, (S, B e, L en, B d, LP dn), (hSession, e, en, d, dn)) \
  X(C_DecryptFinal, (S, B d, LP dn), (hSession, d, dn)) \
  X(C_DigestInit, (S, M), (hSession, m)) \
  X(C_Digest, (S, B d, L dn, B h, LP hn), (hSession, d, dn, h, hn)) \
  X(C_DigestUpdate, (S, B d, L dn), (hSession, d, dn)) \
  X(C_DigestKey, (S, O k), (hSession, k)) \
  X(C_DigestFinal, (S, B h, LP hn), (hSession, h, hn)) \
  X(C_SignInit, (S, M, O k), (hSession, m, k)) \
  X(C_Sign, (S, B d, L dn, B g, LP gn), (hSession, d, dn, g, gn)) \
  X(C_SignUpdate, (S, B d, L dn), (hSession, d, dn)) \
  X(C_SignFinal, (S, B g, LP gn), (hSession, g, gn)) \
  X(C_SignRecoverInit, (S, M, O k), (hSession, m, k)) \
  X(C_SignRecover, (S, B d, L dn, B g, LP gn), (hSession, d, dn, g, gn)) \
  X(C_VerifyInit, (S, M, O k), (hSession, m, k)) \
  X(C_Verify, (S, B d, L dn, B g, L gn), (hSession, d, dn, g, gn)) \
  X(C_VerifyUpdate, (S, B d, L dn), (hSession, d, dn)) \
  X(C_VerifyFinal, (S, B g, L gn), (hSession, g, gn)) \
  X(C_VerifyRecoverInit, (S, M, O k), (hSession, m, k)) \
  X(C_VerifyRecover, (S, B g, L gn, B d, LP dn), (hSession, g, gn, d, dn)) \
  X(C_DigestEncryptUpdate, (S, B a, L an, B b, LP bn), (hSession, a, an, b, bn)) \
  X(C_DecryptDigestUpdate, (S, B a, L an, B b, LP bn), (hSession, a, an, b, bn)) \
  X(C_SignEncryptUpdate, (S, B a, L an, B b, LP bn), (hSession, a, an, b, bn)) \
  X(C_DecryptVerifyUpdate, (S, B a, L an, B b, LP bn), (hSession, a, an, b, bn)) \
  X(C_GenerateKey, (S, M, T t, L n, O *k), (hSession, m, t, n, k)) \
  X(C_GenerateKeyPair, (S, M, T pt, L pn, T st, L sn, O *p, O *k), (hSession, m, pt, pn, st, sn, p, k)) \
  X(C_WrapKey, (S, M, O w, O k, B out, LP n), (hSession, m, w, k, out, n)) \
  X(C_UnwrapKey, (S, M, O u, B in, L n, T t, L tn, O *k), (hSession, m, u, in, n, t, tn, k)) \
  X(C_DeriveKey, (S, M, O b, T t, L n, O *k), (hSession, m, b, t, n, k)) \
  X(C_SeedRandom, (S, B d, L n), (hSession, d, n)) \
  X(C_GenerateRandom, (S, B d, L n), (hSession, d, n)) \
  X(C_GetFunctionStatus, (S), (hSession)) \
  X(C_CancelFunction, (S), (hSession))

/* Each is tracked for idle reclaim, then passed through. */
#define SESSION_CALL(name, params, args) \
  static CK_RV shim_##name params {      \
    CK_RV rv = session_enter(hSession);  \
    if (rv != CKR_OK) return rv;         \
    rv = real->name args;                \
    session_leave(hSession);             \
    return rv;                           \
  }
SESSION_CALLS(SESSION_CALL)

#define OVERRIDE(name) list->name = shim_##name;
#define OVERRIDE_SESSION_CALL(name, params, args) OVERRIDE(name)
void sessions_override(CK_FUNCTION_LIST *list) {
  OVERRIDE(C_OpenSession) OVERRIDE(C_CloseSession) OVERRIDE(C_CloseAllSessions)
  SESSION_CALLS(OVERRIDE_SESSION_CALL)
}
