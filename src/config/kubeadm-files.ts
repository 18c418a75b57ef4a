// Where kubeadm puts etcd's client files: a module of its own so that the CLI can offer them
// as flag defaults without loading the config checks (and their schemas) at start.

/** Where kubeadm puts etcd's CA and the apiserver's etcd client certificate on a control-plane node. */
export const KUBEADM_ETCD_FILES = {
  caFile: '/etc/kubernetes/pki/etcd/ca.crt',
  certFile: '/etc/kubernetes/pki/apiserver-etcd-client.crt',
  keyFile: '/etc/kubernetes/pki/apiserver-etcd-client.key',
} as const;
