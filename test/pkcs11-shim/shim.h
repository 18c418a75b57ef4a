/* The PKCS#11 test shim's two parts share this: shim.c (entry points, configuration, GCM IV,
 * identity, loading) and sessions.c (the session table: limit, idle reclaim, call tracking). */
#ifndef KMS_BROKER_SHIM_H
#define KMS_BROKER_SHIM_H
#include <p11-kit/pkcs11.h>

struct config {
  int token_gcm_iv;
  unsigned long max_sessions; /* 0: no limit of the shim's own */
  unsigned long idle_ms;      /* 0: no reclaim by time */
  unsigned long idle_calls;   /* 0: no reclaim by call count */
  char model[16];             /* blank padded, as CK_TOKEN_INFO wants */
  char serial[16];
  int has_serial;
};

/* The real module's function list, and the configuration read at C_Initialize. */
extern CK_FUNCTION_LIST_PTR real;
extern struct config config;

/* Brackets a call on a session: CKR_SESSION_HANDLE_INVALID for an unknown or reclaimed one. */
CK_RV session_enter(CK_SESSION_HANDLE handle);
void session_leave(CK_SESSION_HANDLE handle);
/* Sessions the shim tracks on `slot`. */
unsigned long sessions_count(CK_SLOT_ID slot);
/* After C_Finalize: the real module closed every session. */
void sessions_forget_all(void);
/* Points every session entry of `list` at the shim's tracking wrappers. */
void sessions_override(CK_FUNCTION_LIST *list);
#endif
