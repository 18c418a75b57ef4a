/* The PKCS#11 test shim's parts share this: shim.c (entry points, configuration, identity,
 * loading), sessions.c (the session table: limit, idle reclaim, call tracking) and gcm-iv.c
 * (token-drawn GCM IVs). */
#ifndef KMS_BROKER_SHIM_H
#define KMS_BROKER_SHIM_H
#include <p11-kit/pkcs11.h>

enum gcm_iv { GCM_IV_CALLER, GCM_IV_IN_PARAMS, GCM_IV_APPENDED, GCM_IV_APPENDED_96 };

struct config {
  enum gcm_iv gcm_iv;
  unsigned long max_sessions; /* 0: no limit of the shim's own */
  unsigned long idle_ms;      /* 0: no reclaim by time */
  unsigned long idle_calls;   /* 0: no reclaim by call count */
  unsigned long latency_us;   /* 0: no round trip added to session calls */
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
/* gcm-iv.c: token-drawn GCM IVs (called inside session_enter/session_leave). */
CK_RV gcm_encrypt_init(CK_SESSION_HANDLE handle, CK_MECHANISM_PTR mechanism, CK_OBJECT_HANDLE key);
CK_RV gcm_encrypt(CK_SESSION_HANDLE handle, CK_BYTE_PTR data, CK_ULONG data_len, CK_BYTE_PTR out, CK_ULONG_PTR out_len);
#endif
