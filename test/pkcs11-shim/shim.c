/*
 * kms-broker PKCS#11 test shim: SoftHSM with the rules of real HSMs.
 *
 * A PKCS#11 module for tests only. It loads the real module (KMS_BROKER_SHIM_MODULE, default
 * /usr/lib/softhsm/libsofthsm2.so), copies its function list and overrides a few entries so
 * the broker can be tested against behaviour SoftHSM lacks. Each behaviour is off unless its
 * environment variable is set when C_Initialize runs, so one built library serves all tests:
 *
 *   KMS_BROKER_SHIM_GCM_IV=token|appended|appended96
 *       The token draws the AES-GCM IV and refuses the caller's: it writes it into pIv
 *       (token: PKCS#11 v3.0, AWS CloudHSM) or appends it to C_Encrypt's output (appended:
 *       Thales Luna in FIPS mode, 16 bytes; appended96: Luna firmware 7.9.3+, 12 bytes when
 *       ulIvBits is 96). See gcm-iv.c. caller or unset: SoftHSM's own behaviour.
 *   KMS_BROKER_SHIM_MAX_SESSIONS=N A token that states a session cap: at most N sessions per
 *       token; C_OpenSession then fails CKR_SESSION_COUNT, C_GetTokenInfo reports N.
 *   KMS_BROKER_SHIM_IDLE_MS=M      Idle reclaim, like a YubiHSM 2 after 30 s: a session no
 *       call used for M ms is closed by the shim (at the next call on any session); calls on
 *       it answer CKR_SESSION_HANDLE_INVALID.
 *   KMS_BROKER_SHIM_IDLE_CALLS=K   The same, measured deterministically for tests: a session
 *       is reclaimed once K calls on other sessions happened since its last use.
 *   KMS_BROKER_SHIM_LATENCY_US=U   A network HSM (Luna, CloudHSM): every call on a session
 *       first waits U microseconds, as a round trip to the appliance would; calls on different
 *       sessions wait in parallel. A crypto call is two of them (init, then the operation).
 *   KMS_BROKER_SHIM_LABEL / KMS_BROKER_SHIM_SERIAL
 *       Token model / serial number reported by C_GetTokenInfo (the model also becomes the
 *       library description in C_GetInfo). The model defaults to the shim's own file name
 *       (lib<name>.so gives <name>), so a copy at another path is told apart with no setting.
 *       Manufacturer ID is always "kms-broker shim". Token labels are never changed.
 *
 * The shim loads a private copy of the real module (see load_real_module), so two copies of
 * the shim in one process (two backends on two module paths) drive two independent SoftHSM
 * instances instead of fighting over one C_Initialize.
 * Built by scripts/build-pkcs11-shim.sh; see docs/backends/pkcs11.md.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "shim.h"

#define DEFAULT_MODULE "/usr/lib/softhsm/libsofthsm2.so"
#define MANUFACTURER "kms-broker shim"

static CK_FUNCTION_LIST real_list_copy, shim_list;
CK_FUNCTION_LIST_PTR real;
static void *real_module;
struct config config;
static pthread_mutex_t load_lock = PTHREAD_MUTEX_INITIALIZER;

static void pad_copy(char *dest, size_t size, const char *text) {
  size_t len = strlen(text);
  memset(dest, ' ', size);
  memcpy(dest, text, len < size ? len : size);
}

/* A positive decimal number from the environment; 0 when unset; -1 (with a message) if bad. */
static int read_count(const char *name, unsigned long *out) {
  const char *text = getenv(name);
  char *end;
  *out = 0;
  if (text == NULL || *text == '\0') return 0;
  errno = 0;
  *out = strtoul(text, &end, 10);
  if (errno == 0 && *end == '\0' && *out > 0 && text[0] != '-') return 0;
  fprintf(stderr, "kms-broker shim: %s must be a positive whole number, got \"%s\"\n", name, text);
  return -1;
}

/* The shim's file name without "lib" and ".so": the default model of this copy. */
static void default_model(char *out, size_t size) {
  Dl_info info;
  const char *name = "kms-broker-shim", *slash;
  char buf[64];
  if (dladdr((void *)default_model, &info) && info.dli_fname != NULL) {
    slash = strrchr(info.dli_fname, '/');
    name = slash != NULL ? slash + 1 : info.dli_fname;
  }
  if (strncmp(name, "lib", 3) == 0) name += 3;
  snprintf(buf, sizeof buf, "%s", name);
  if (strlen(buf) > 3 && strcmp(buf + strlen(buf) - 3, ".so") == 0) buf[strlen(buf) - 3] = '\0';
  pad_copy(out, size, buf);
}

static CK_RV read_config(void) {
  const char *iv = getenv("KMS_BROKER_SHIM_GCM_IV"), *label = getenv("KMS_BROKER_SHIM_LABEL");
  const char *serial = getenv("KMS_BROKER_SHIM_SERIAL");
  memset(&config, 0, sizeof config);
  if (iv == NULL || *iv == '\0' || strcmp(iv, "caller") == 0) config.gcm_iv = GCM_IV_CALLER;
  else if (strcmp(iv, "token") == 0) config.gcm_iv = GCM_IV_IN_PARAMS;
  else if (strcmp(iv, "appended") == 0) config.gcm_iv = GCM_IV_APPENDED;
  else if (strcmp(iv, "appended96") == 0) config.gcm_iv = GCM_IV_APPENDED_96;
  else {
    fprintf(stderr, "kms-broker shim: KMS_BROKER_SHIM_GCM_IV must be caller, token, appended or appended96, got \"%s\"\n", iv);
    return CKR_ARGUMENTS_BAD;
  }
  if (read_count("KMS_BROKER_SHIM_MAX_SESSIONS", &config.max_sessions) ||
      read_count("KMS_BROKER_SHIM_IDLE_MS", &config.idle_ms) ||
      read_count("KMS_BROKER_SHIM_IDLE_CALLS", &config.idle_calls) ||
      read_count("KMS_BROKER_SHIM_LATENCY_US", &config.latency_us))
    return CKR_ARGUMENTS_BAD;
  if (label != NULL && *label != '\0') pad_copy(config.model, sizeof config.model, label);
  else default_model(config.model, sizeof config.model);
  config.has_serial = serial != NULL && *serial != '\0';
  if (config.has_serial) pad_copy(config.serial, sizeof config.serial, serial);
  return CKR_OK;
}

/* ---- overridden entries ---- */

static CK_RV shim_C_Initialize(CK_VOID_PTR init_args) {
  CK_RV rv = read_config();
  if (rv != CKR_OK) return rv;
  return real->C_Initialize(init_args);
}

static CK_RV shim_C_Finalize(CK_VOID_PTR reserved) {
  CK_RV rv = real->C_Finalize(reserved);
  if (rv == CKR_OK) sessions_forget_all();
  return rv;
}

static CK_RV shim_C_GetInfo(CK_INFO_PTR info) {
  CK_RV rv = real->C_GetInfo(info);
  if (rv != CKR_OK) return rv;
  pad_copy((char *)info->manufacturerID, sizeof info->manufacturerID, MANUFACTURER);
  memset(info->libraryDescription, ' ', sizeof info->libraryDescription);
  memcpy(info->libraryDescription, config.model, sizeof config.model);
  return CKR_OK;
}

static CK_RV shim_C_GetTokenInfo(CK_SLOT_ID slot, CK_TOKEN_INFO_PTR info) {
  CK_RV rv = real->C_GetTokenInfo(slot, info);
  if (rv != CKR_OK) return rv;
  pad_copy((char *)info->manufacturerID, sizeof info->manufacturerID, MANUFACTURER);
  memcpy(info->model, config.model, sizeof info->model);
  if (config.has_serial) memcpy(info->serialNumber, config.serial, sizeof info->serialNumber);
  if (config.max_sessions > 0) {
    info->ulSessionCount = sessions_count(slot);
    info->ulMaxSessionCount = config.max_sessions;
    info->ulMaxRwSessionCount = config.max_sessions;
  }
  return CKR_OK;
}

static CK_RV shim_C_EncryptInit(CK_SESSION_HANDLE handle, CK_MECHANISM_PTR mechanism, CK_OBJECT_HANDLE key) {
  CK_RV rv = session_enter(handle);
  if (rv != CKR_OK) return rv;
  if (config.gcm_iv != GCM_IV_CALLER && mechanism != NULL && mechanism->mechanism == CKM_AES_GCM)
    rv = gcm_encrypt_init(handle, mechanism, key);
  else
    rv = real->C_EncryptInit(handle, mechanism, key);
  session_leave(handle);
  return rv;
}

static CK_RV shim_C_Encrypt(CK_SESSION_HANDLE handle, CK_BYTE_PTR data, CK_ULONG data_len, CK_BYTE_PTR out,
                            CK_ULONG_PTR out_len) {
  CK_RV rv = session_enter(handle);
  if (rv != CKR_OK) return rv;
  rv = gcm_encrypt(handle, data, data_len, out, out_len);
  session_leave(handle);
  return rv;
}

/* ---- loading ---- */

/* Copies the file at `path` to a new temporary file; its name goes to `copy` (caller unlinks). */
static int copy_to_temp(const char *path, char *copy, size_t size) {
  const char *dir = getenv("TMPDIR");
  char buf[65536];
  ssize_t n = 1; /* 0 once the whole file is copied, -1 on an error */
  int in = open(path, O_RDONLY | O_CLOEXEC), out;
  snprintf(copy, size, "%s/kms-broker-shim-XXXXXX", dir != NULL && *dir != '\0' ? dir : "/tmp");
  out = in < 0 ? -1 : mkstemp(copy);
  while (out >= 0 && n > 0) {
    n = read(in, buf, sizeof buf);
    if (n > 0 && write(out, buf, (size_t)n) != n) n = -1;
  }
  if (in >= 0) close(in);
  if (out >= 0 && close(out) == 0 && n == 0) return 0;
  if (out >= 0) unlink(copy);
  return -1;
}

/* Loads a private copy of the real module: a second file is a second instance, so two copies of
 * the shim in one process (two backends on two module paths), or the shim beside the real module,
 * never share one C_Initialize. (dlmopen would isolate it too, but SoftHSM's RNG fails there.) */
static CK_RV load_real_module(void) {
  const char *path = getenv("KMS_BROKER_SHIM_MODULE");
  char copy[4096];
  CK_C_GetFunctionList get_list;
  CK_FUNCTION_LIST_PTR list;
  if (path == NULL || *path == '\0') path = DEFAULT_MODULE;
  if (copy_to_temp(path, copy, sizeof copy) != 0) {
    fprintf(stderr, "kms-broker shim: cannot copy %s (KMS_BROKER_SHIM_MODULE): %s\n", path, strerror(errno));
    return CKR_GENERAL_ERROR;
  }
  real_module = dlopen(copy, RTLD_NOW | RTLD_LOCAL);
  unlink(copy);
  if (real_module == NULL) {
    fprintf(stderr, "kms-broker shim: cannot load %s (KMS_BROKER_SHIM_MODULE): %s\n", path, dlerror());
    return CKR_GENERAL_ERROR;
  }
  get_list = (CK_C_GetFunctionList)dlsym(real_module, "C_GetFunctionList");
  if (get_list == NULL || get_list(&list) != CKR_OK) {
    fprintf(stderr, "kms-broker shim: %s has no usable C_GetFunctionList\n", path);
    return CKR_GENERAL_ERROR;
  }
  real_list_copy = *list;
  real = &real_list_copy;
  return CKR_OK;
}

/* Unloading the shim unloads its private copy of the real module too. */
__attribute__((destructor)) static void unload_real_module(void) {
  if (real_module != NULL) dlclose(real_module);
}

#define OVERRIDE(name) shim_list.name = shim_##name
static void build_shim_list(void) {
  shim_list = *real;
  OVERRIDE(C_Initialize), OVERRIDE(C_Finalize), OVERRIDE(C_GetInfo), OVERRIDE(C_GetTokenInfo);
  sessions_override(&shim_list);
  OVERRIDE(C_EncryptInit), OVERRIDE(C_Encrypt);
}

/* The one exported symbol (built with -fvisibility=hidden). */
__attribute__((visibility("default"))) CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR out) {
  CK_RV rv = CKR_OK;
  if (out == NULL) return CKR_ARGUMENTS_BAD;
  pthread_mutex_lock(&load_lock);
  if (real == NULL && (rv = load_real_module()) == CKR_OK) build_shim_list();
  pthread_mutex_unlock(&load_lock);
  if (rv == CKR_OK) *out = &shim_list;
  return rv;
}
