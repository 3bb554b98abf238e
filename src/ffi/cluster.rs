//! Redis Cluster's module API: the cluster bus, the node list, the context flags
//! that say cluster mode and primary, and the blocked client a fanned-out command
//! waits in. Kept apart (and minimal) so it can be unified with other blocked-client
//! wrappers.

use std::ffi::{c_char, c_int, c_uchar, CStr};

use redis_module::raw;

use super::{string_bytes, Ctx, RString};
use crate::core::cluster::NodeId;

const ID_LEN: usize = raw::REDISMODULE_NODE_ID_LEN as usize;

/// A node id as the API takes it: Redis looks ids up with `strlen`, so they need a NUL.
fn c_id(id: &NodeId) -> [u8; ID_LEN + 1] {
    let mut c = [0u8; ID_LEN + 1];
    c[..ID_LEN].copy_from_slice(id);
    c
}

/// Reads one of Redis' node ids (exactly 40 bytes, not NUL-terminated).
///
/// # Safety
/// `p` must point to at least 40 readable bytes.
unsafe fn read_id(p: *const c_char) -> NodeId {
    let mut id = [0u8; ID_LEN];
    unsafe { std::ptr::copy_nonoverlapping(p.cast::<u8>(), id.as_mut_ptr(), ID_LEN) };
    id
}

/// What the module needs to know of one node.
#[derive(Debug, Clone, Copy)]
pub struct Node {
    pub id: NodeId,
    pub myself: bool,
    pub primary: bool,
    /// The cluster agreed this node is down (FAIL, not merely PFAIL).
    pub failed: bool,
}

pub type Receiver = unsafe extern "C" fn(*mut raw::RedisModuleCtx, *const c_char, u8, *const c_uchar, u32);

/// The sender of a bus message, as the receiver callback hands it.
pub fn sender_id(sender: *const c_char) -> Option<NodeId> {
    (!sender.is_null()).then(|| unsafe { read_id(sender) })
}

/// A bus message's payload as bytes.
pub fn payload<'a>(payload: *const c_uchar, len: u32) -> &'a [u8] {
    if payload.is_null() {
        return &[];
    }
    unsafe { std::slice::from_raw_parts(payload, len as usize) }
}

impl Ctx {
    fn flag(&self, flag: u32) -> bool {
        self.flags() & flag != 0
    }

    pub fn in_cluster(&self) -> bool {
        self.flag(raw::REDISMODULE_CTX_FLAGS_CLUSTER)
    }

    pub fn is_primary(&self) -> bool {
        self.flag(raw::REDISMODULE_CTX_FLAGS_MASTER)
    }

    pub fn register_cluster_receiver(&self, message_type: u8, receiver: Receiver) {
        unsafe { rm!(RedisModule_RegisterClusterMessageReceiver(self.0, message_type, Some(receiver))) };
    }

    /// Sends a message to one node; false if it cannot go (no link to that node now).
    pub fn send_cluster_message(&self, to: &NodeId, message_type: u8, bytes: &[u8]) -> bool {
        let id = c_id(to);
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        unsafe {
            rm!(RedisModule_SendClusterMessage(self.0, id.as_ptr().cast::<c_char>(), message_type, bytes.as_ptr().cast::<c_char>(), len))
                == raw::REDISMODULE_OK as c_int
        }
    }

    /// Every node this one knows (handshaking and address-less ones excluded).
    pub fn cluster_nodes(&self) -> Vec<Node> {
        let mut n = 0usize;
        let list = unsafe { rm!(RedisModule_GetClusterNodesList(self.0, &mut n)) };
        if list.is_null() {
            return Vec::new();
        }
        let ids: Vec<NodeId> = (0..n).map(|i| unsafe { read_id(*list.add(i)) }).collect();
        unsafe { rm!(RedisModule_FreeClusterNodesList(list)) };
        ids.into_iter()
            .filter_map(|id| {
                let c = c_id(&id);
                let mut flags: c_int = 0;
                let ok = unsafe {
                    rm!(RedisModule_GetClusterNodeInfo(
                        self.0, c.as_ptr().cast::<c_char>(), std::ptr::null_mut(), std::ptr::null_mut(), std::ptr::null_mut(), &mut flags
                    ))
                } == raw::REDISMODULE_OK as c_int;
                let has = |f: u32| flags as u32 & f != 0;
                ok.then(|| Node {
                    id,
                    myself: has(raw::REDISMODULE_NODE_MYSELF),
                    primary: has(raw::REDISMODULE_NODE_MASTER),
                    failed: has(raw::REDISMODULE_NODE_FAIL),
                })
            })
            .collect()
    }

    /// The text reply of `CLUSTER <sub>` (INFO, NODES), if it is one.
    pub fn cluster_text(&self, sub: &CStr) -> Option<Vec<u8>> {
        let reply = unsafe { rm!(RedisModule_Call(self.0, c"CLUSTER".as_ptr(), c"c".as_ptr(), sub.as_ptr())) };
        if reply.is_null() {
            return None;
        }
        let mut len = 0usize;
        let p = unsafe { rm!(RedisModule_CallReplyStringPtr(reply, &mut len)) };
        let text = (!p.is_null()).then(|| unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) }.to_vec());
        unsafe { rm!(RedisModule_FreeCallReply(reply)) };
        text
    }

    /// The ACL user named `name`, for key permission checks on behalf of a client of
    /// another node (empty: the module's own work, which may touch anything).
    pub fn acl_user_named(&self, name: &[u8]) -> super::AclUser {
        if name.is_empty() {
            return super::AclUser::Internal;
        }
        let named: RString = self.string(name);
        let user = unsafe { rm!(RedisModule_GetModuleUserFromUserName(named.ptr)) };
        if user.is_null() {
            super::AclUser::Unknown
        } else {
            super::AclUser::User(*self, user, name.to_vec())
        }
    }

    /// The calling client's ACL user name (empty when there is no client).
    pub fn acl_user_name(&self) -> Vec<u8> {
        let name = unsafe { rm!(RedisModule_GetCurrentUserName(self.0)) };
        if name.is_null() {
            return Vec::new();
        }
        let bytes = string_bytes(name).to_vec();
        unsafe { rm!(RedisModule_FreeString(self.0, name)) };
        bytes
    }
}

/// Names used only in log lines.
pub fn node_name(id: &NodeId) -> String {
    String::from_utf8_lossy(id).into_owned()
}
