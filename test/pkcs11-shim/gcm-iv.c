/* Token-drawn AES-GCM IVs, in the two ways real HSMs return them (KMS_BROKER_SHIM_GCM_IV):
 *   token      PKCS#11 v2.40 errata 01 / v3.0, as AWS CloudHSM: C_EncryptInit refuses a caller's IV
 *              (any non-zero byte: CKR_MECHANISM_PARAM_INVALID); given 12 zero bytes (ulIvLen 12,
 *              ulIvBits 96) it draws 12 random bytes and writes them into the caller's pIv.
 *   appended   Thales Luna in FIPS mode before firmware 7.9.3: C_EncryptInit refuses any IV
 *              (ulIvLen must be 0); it draws 16 bytes, and C_Encrypt returns ciphertext || tag || IV.
 *   appended96 The same from Luna firmware 7.9.3: with ulIvBits 96 the IV is 12 bytes (else 16).
 * C_DecryptInit takes the IV as given in every mode. */
#include <pthread.h>
#include <string.h>
#include "shim.h"

#define GCM_IV_LEN 12
#define LONG_IV_LEN 16
#define PENDING_MAX 256

/* An appended-IV encryption between its C_EncryptInit and its C_Encrypt, per session. */
struct pending {
  CK_SESSION_HANDLE handle;
  CK_BYTE iv[LONG_IV_LEN];
  CK_ULONG iv_len, tag_len;
  int used;
};
static struct pending pending[PENDING_MAX];
static pthread_mutex_t pending_lock = PTHREAD_MUTEX_INITIALIZER;

/* Takes (and clears) the pending state of `handle`, or stores `set` for it when given. */
static int pending_swap(CK_SESSION_HANDLE handle, struct pending *take, const struct pending *set) {
  int found = 0, i;
  pthread_mutex_lock(&pending_lock);
  for (i = 0; i < PENDING_MAX; i++) {
    if (pending[i].used && pending[i].handle == handle) {
      if (take != NULL) *take = pending[i];
      pending[i].used = 0;
      found = 1;
    }
  }
  for (i = 0; set != NULL && i < PENDING_MAX; i++) {
    if (!pending[i].used) {
      pending[i] = *set;
      pending[i].used = 1;
      break;
    }
  }
  pthread_mutex_unlock(&pending_lock);
  return found;
}

static CK_RV init_with_iv(CK_SESSION_HANDLE handle, CK_MECHANISM_PTR mechanism, CK_OBJECT_HANDLE key,
                          CK_BYTE_PTR iv, CK_ULONG iv_len) {
  CK_GCM_PARAMS params = *(CK_GCM_PARAMS *)mechanism->pParameter;
  CK_MECHANISM with_iv = *mechanism;
  params.pIv = iv;
  params.ulIvLen = iv_len;
  params.ulIvBits = iv_len * 8;
  with_iv.pParameter = &params;
  return real->C_EncryptInit(handle, &with_iv, key);
}

CK_RV gcm_encrypt_init(CK_SESSION_HANDLE handle, CK_MECHANISM_PTR mechanism, CK_OBJECT_HANDLE key) {
  static const CK_BYTE zero_iv[GCM_IV_LEN];
  CK_GCM_PARAMS *given = mechanism->pParameter;
  struct pending state;
  CK_RV rv;
  pending_swap(handle, NULL, NULL);
  if (given == NULL || mechanism->ulParameterLen != sizeof(CK_GCM_PARAMS)) return CKR_MECHANISM_PARAM_INVALID;
  if (config.gcm_iv == GCM_IV_IN_PARAMS) {
    if (given->pIv == NULL || given->ulIvLen != GCM_IV_LEN || given->ulIvBits != GCM_IV_LEN * 8 ||
        memcmp(given->pIv, zero_iv, GCM_IV_LEN) != 0)
      return CKR_MECHANISM_PARAM_INVALID;
    CK_BYTE iv[GCM_IV_LEN];
    rv = real->C_GenerateRandom(handle, iv, sizeof iv);
    if (rv == CKR_OK) rv = init_with_iv(handle, mechanism, key, iv, sizeof iv);
    if (rv == CKR_OK) memcpy(given->pIv, iv, sizeof iv);
    return rv;
  }
  if (given->ulIvLen != 0) return CKR_MECHANISM_PARAM_INVALID;
  memset(&state, 0, sizeof state);
  state.handle = handle;
  state.iv_len = config.gcm_iv == GCM_IV_APPENDED_96 && given->ulIvBits == GCM_IV_LEN * 8 ? GCM_IV_LEN : LONG_IV_LEN;
  state.tag_len = given->ulTagBits / 8;
  rv = real->C_GenerateRandom(handle, state.iv, state.iv_len);
  if (rv == CKR_OK) rv = init_with_iv(handle, mechanism, key, state.iv, state.iv_len);
  if (rv == CKR_OK) pending_swap(handle, NULL, &state);
  return rv;
}

/* C_Encrypt, which appends the IV for an encryption gcm_encrypt_init began in an appended mode. */
CK_RV gcm_encrypt(CK_SESSION_HANDLE handle, CK_BYTE_PTR data, CK_ULONG data_len, CK_BYTE_PTR out, CK_ULONG_PTR out_len) {
  struct pending state;
  CK_ULONG needed, room;
  CK_RV rv;
  if (!pending_swap(handle, &state, NULL)) return real->C_Encrypt(handle, data, data_len, out, out_len);
  needed = data_len + state.tag_len + state.iv_len;
  if (out == NULL || *out_len < needed) {
    /* A length query, or a buffer too small: the operation stays active, as the spec says. */
    rv = out == NULL ? CKR_OK : CKR_BUFFER_TOO_SMALL;
    *out_len = needed;
    pending_swap(handle, NULL, &state);
    return rv;
  }
  room = *out_len - state.iv_len;
  rv = real->C_Encrypt(handle, data, data_len, out, &room);
  if (rv != CKR_OK) return rv;
  memcpy(out + room, state.iv, state.iv_len);
  *out_len = room + state.iv_len;
  return CKR_OK;
}
