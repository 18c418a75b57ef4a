// How the files a config names reach their users. The non-secret ones (certificates, TLS
// keys) are read and checked once, when the config is loaded, and served from memory after
// that; tests hand in contents without touching disk.
export type FileReader = (path: string) => Buffer;
