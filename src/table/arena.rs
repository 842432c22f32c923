//! Where a shard's nodes live: chunks of slots that the shard allocates as
//! it fills, never moves, and frees only when it and every node it retired
//! are gone.
//!
//! # Why not one allocation per node
//!
//! * A resize relinks every node. With nodes scattered by the allocator,
//!   reaching each one was a cache miss (two fifths of a fresh claim's time
//!   in `Shard::claim`, BENCHMARKS.md). Here a resize walks the chunks in
//!   address order, which the CPU streams, and skips unlinked slots by
//!   their node's `LINKED` bit.
//! * A slot costs the node's size: no allocator header or rounding (a
//!   `u64 -> u64` node takes 40 bytes, where glibc spends 48).
//! * Taking a slot is a bump or a pop, where `malloc` took about 200
//!   instructions.
//!
//! # Protocol
//!
//! * [`Arena`] sits in the shard's writer state: only the shard lock holder
//!   takes slots, walks the chunks, and pops the free list.
//! * A node leaves its slot through the epoch: once no reader can reach it,
//!   whichever thread runs the deferred release drops it in place and
//!   pushes its slot onto [`Slabs::returned`], a stack that any thread may
//!   push to and only the lock holder empties, all at once, with a `swap`.
//!   Taking the whole stack means a slot is never popped while another
//!   thread's push still reads it, so the stack has no ABA problem.
//! * The lock holder takes the returned slots only when its own free list
//!   and the newest chunk are both used up, so a claim that finds room in
//!   the chunk touches no shared line; memory stays within one chunk of
//!   what the live and not yet released nodes need.
//! * Deferred releases hold an [`Arc`] of the [`Slabs`], so the chunks stay
//!   allocated until the last node retired from them has been dropped, even
//!   when the store is dropped first.

use std::mem::MaybeUninit;
use std::ptr::{self, NonNull};

use crate::sync::{Arc, AtomicPtr, Mutex, Ordering, Shared};
use crate::table::entry::Node;

/// Slots in a shard's first chunk; each later chunk doubles, up to
/// [`MAX_CHUNK`].
#[cfg(not(idemstore_loom))]
const FIRST_CHUNK: usize = 16;
/// Slots in a chunk at most, so that a large shard's unused tail stays
/// small.
#[cfg(not(idemstore_loom))]
const MAX_CHUNK: usize = 1024;
/// Under loom, chunks of one slot: every claim after a shard's first takes
/// the returned slots before it adds a chunk, so the models' few claims
/// reuse slots and race their release.
#[cfg(idemstore_loom)]
const FIRST_CHUNK: usize = 1;
#[cfg(idemstore_loom)]
const MAX_CHUNK: usize = 1;

/// The shard lock holder's side: where the next slot comes from.
pub(crate) struct Arena<K, V> {
    slabs: Arc<Slabs<K, V>>,
    /// Slots taken back from `slabs.returned`, linked through their nodes'
    /// `next` fields.
    free: *mut Node<K, V>,
    /// The newest chunk, its length, and how many of its slots were handed
    /// out; slots beyond `used` were never written.
    newest: *mut Node<K, V>,
    len: usize,
    used: usize,
}

/// The chunks' memory and the slots released to them, shared with the
/// deferred releases of retired nodes.
pub(crate) struct Slabs<K, V> {
    /// Every chunk and its length, oldest first. Locked by the shard lock
    /// holder to add a chunk or walk them; no one else takes it.
    chunks: Mutex<Vec<Chunk<K, V>>>,
    /// Released slots, linked through their nodes' `next` fields.
    returned: AtomicPtr<Node<K, V>>,
}

/// A chunk's first slot and its length.
type Chunk<K, V> = (NonNull<Node<K, V>>, usize);

// SAFETY: the raw pointers name slots of chunks the `Slabs` owns; nodes in
// them are dropped by whichever thread releases them, so the arena may
// cross threads exactly when keys and values may. The free list is touched
// only through `&mut Arena`, under the shard lock.
unsafe impl<K: Send, V: Send> Send for Arena<K, V> {}
// SAFETY: as above; shared use is the atomic `returned` stack and the
// `chunks` mutex.
unsafe impl<K: Send, V: Send> Send for Slabs<K, V> {}
// SAFETY: as above.
unsafe impl<K: Send, V: Send> Sync for Slabs<K, V> {}

impl<K, V> Arena<K, V> {
    pub(crate) fn new() -> Self {
        Arena {
            slabs: Arc::new(Slabs {
                chunks: Mutex::new(Vec::new()),
                returned: AtomicPtr::new(ptr::null_mut()),
            }),
            free: ptr::null_mut(),
            newest: ptr::null_mut(),
            len: 0,
            used: 0,
        }
    }

    /// The shared side, for a deferred release to return slots to.
    pub(crate) fn slabs(&self) -> &Arc<Slabs<K, V>> {
        &self.slabs
    }

    /// Moves `node` into a slot. Shard lock only.
    pub(crate) fn alloc(&mut self, node: Node<K, V>) -> *const Node<K, V> {
        let slot = self.slot();
        // SAFETY: `slot` is a slot of one of our chunks that holds no live
        // node: never written, or released (its node dropped, and no reader
        // can reach it).
        unsafe { slot.write(node) };
        slot.cast_const()
    }

    fn slot(&mut self) -> *mut Node<K, V> {
        if let Some(slot) = self.pop() {
            return slot;
        }
        if self.used == self.len {
            // Acquire pairs with the Release push in `Slabs::release`: the
            // released nodes' drops and links happen before we reuse them.
            self.free = self.slabs.returned.swap(ptr::null_mut(), Ordering::Acquire);
            if let Some(slot) = self.pop() {
                return slot;
            }
            self.grow();
        }
        // SAFETY: `used < len`: within the newest chunk.
        let slot = unsafe { self.newest.add(self.used) };
        self.used += 1;
        slot
    }

    fn pop(&mut self) -> Option<*mut Node<K, V>> {
        let slot = NonNull::new(self.free)?.as_ptr();
        // SAFETY: a released slot.
        #[cfg(idemstore_loom)]
        unsafe {
            Node::touch_slot(slot)
        };
        // SAFETY: a released slot (see `Slabs::release`).
        let link = unsafe { Node::free_link(slot) };
        // Relaxed: the link was published with the stack (see `slot`), or
        // written by this lock holder.
        // SAFETY: not dereferenced, only carried.
        self.free = unsafe { link.load(Ordering::Relaxed, crate::sync::unprotected()) }
            .as_raw()
            .cast_mut();
        Some(slot)
    }

    /// Adds a chunk twice the size of the last, up to [`MAX_CHUNK`].
    fn grow(&mut self) {
        let len = if self.len == 0 {
            FIRST_CHUNK
        } else {
            (self.len * 2).min(MAX_CHUNK)
        };
        let chunk = Box::<[Node<K, V>]>::new_uninit_slice(len);
        let start = Box::into_raw(chunk).cast::<Node<K, V>>();
        self.newest = start;
        self.len = len;
        self.used = 0;
        // SAFETY: `Box::into_raw` is never null.
        let start = unsafe { NonNull::new_unchecked(start) };
        self.slabs.chunks.lock().push((start, len));
    }

    /// Calls `f` on every linked node, in address order. Shard lock only.
    pub(crate) fn for_each_linked(&self, mut f: impl FnMut(Shared<'_, Node<K, V>>)) {
        let chunks = self.slabs.chunks.lock();
        let Some(((last, _), older)) = chunks.split_last() else {
            return;
        };
        let used = older.iter().copied().chain([(*last, self.used)]);
        for (start, used) in used {
            for index in 0..used {
                // SAFETY: within the chunk's written slots.
                let slot = unsafe { start.as_ptr().add(index) };
                // SAFETY: every written slot holds a node made by a claim,
                // dropped or not.
                if unsafe { Node::is_linked(slot) } {
                    f(Shared::from(slot.cast_const()));
                }
            }
        }
    }
}

impl<K, V> Slabs<K, V> {
    /// Drops `nodes` in place and returns their slots for reuse.
    ///
    /// # Safety
    ///
    /// Every node must come from this `Slabs`' arena, have been unlinked,
    /// be unreachable for every reader (its grace period passed), and be
    /// released exactly once.
    pub(crate) unsafe fn release(&self, nodes: impl IntoIterator<Item = *mut Node<K, V>>) {
        let mut first: *mut Node<K, V> = ptr::null_mut();
        let mut last = first;
        for node in nodes {
            // SAFETY: the caller's contract: nothing else can reach it.
            unsafe { ptr::drop_in_place(node) };
            // SAFETY: a slot of our chunks.
            #[cfg(idemstore_loom)]
            unsafe {
                Node::touch_slot(node)
            };
            // SAFETY: a slot of our chunks whose node was just dropped; its
            // link is ours until the slot is pushed below.
            let link = unsafe { Node::free_link(node) };
            link.store(Shared::from(first.cast_const()), Ordering::Relaxed);
            if last.is_null() {
                last = node;
            }
            first = node;
        }
        if first.is_null() {
            return;
        }
        // SAFETY: `last` is in the list built above, not yet published.
        let tail = unsafe { Node::free_link(last) };
        // Relaxed: a CAS below orders it.
        let mut head = self.returned.load(Ordering::Relaxed);
        loop {
            tail.store(Shared::from(head.cast_const()), Ordering::Relaxed);
            // Release pairs with the Acquire swap in `Arena::slot`.
            match self.returned.compare_exchange_weak(
                head,
                first,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(current) => head = current,
            }
        }
    }
}

impl<K, V> Drop for Slabs<K, V> {
    fn drop(&mut self) {
        // Every node is dropped by now: the shard dropped its linked ones,
        // and each retired one held this `Arc` until its release.
        for (start, len) in self.chunks.lock().drain(..) {
            let chunk = ptr::slice_from_raw_parts_mut(
                start.as_ptr().cast::<MaybeUninit<Node<K, V>>>(),
                len,
            );
            // SAFETY: made by `Box::into_raw` in `Arena::grow` with this
            // length; `MaybeUninit` drops nothing.
            drop(unsafe { Box::from_raw(chunk) });
        }
    }
}

#[cfg(all(test, not(idemstore_loom)))]
mod tests {
    use super::*;

    fn node(key: u64) -> Node<u64, u64> {
        Node::in_flight(key, key, None, u64::MAX)
    }

    /// Unlinks the node in `slot` and releases it, as a retire does once
    /// its grace period has passed.
    fn unlink_and_release(arena: &Arena<u64, u64>, slot: *const Node<u64, u64>) {
        // SAFETY: a live node of this arena, reachable by no one else.
        unsafe {
            (*slot).set_unlinked();
            arena.slabs().release([slot.cast_mut()]);
        }
    }

    fn linked_keys(arena: &Arena<u64, u64>) -> Vec<u64> {
        let mut keys = Vec::new();
        // SAFETY: linked nodes are live.
        arena.for_each_linked(|node| keys.push(unsafe { node.deref() }.key));
        keys
    }

    /// A released slot waits until the newest chunk is used up, then is
    /// taken before any new chunk: claims that fit in the chunk touch no
    /// shared line, and memory stays within a chunk of what is live.
    #[test]
    fn released_slots_are_reused_once_the_newest_chunk_is_full() {
        let mut arena = Arena::new();
        let first: Vec<_> = (0..FIRST_CHUNK as u64)
            .map(|k| arena.alloc(node(k)))
            .collect();
        unlink_and_release(&arena, first[3]);
        assert_eq!(arena.alloc(node(100)), first[3], "the chunk is full: reuse");
        let next = arena.alloc(node(101));
        assert!(!first.contains(&next), "nothing left to reuse: a new chunk");

        let mut fresh = Arena::new();
        let a = fresh.alloc(node(1));
        unlink_and_release(&fresh, a);
        assert_ne!(fresh.alloc(node(2)), a, "room in the chunk: no reuse yet");
    }

    /// A walk (a resize's) visits exactly the linked nodes, in address
    /// order: not those released, nor those unlinked and still waiting for
    /// the epoch.
    #[test]
    fn a_walk_visits_only_linked_nodes_in_address_order() {
        let mut arena = Arena::new();
        let slots: Vec<_> = (0..40).map(|k| arena.alloc(node(k))).collect();
        unlink_and_release(&arena, slots[1]);
        // SAFETY: a live node of this arena.
        unsafe { (*slots[2]).set_unlinked() };
        unlink_and_release(&arena, slots[39]);
        let expected: Vec<u64> = (0..40).filter(|k| ![1, 2, 39].contains(k)).collect();
        assert_eq!(linked_keys(&arena), expected);
    }

    /// Chunks double from the first, up to the cap.
    #[test]
    fn chunks_double_up_to_the_cap() {
        let mut arena = Arena::new();
        for key in 0..10_000 {
            arena.alloc(node(key));
        }
        let chunks = arena.slabs().chunks.lock();
        let lens: Vec<usize> = chunks.iter().map(|&(_, len)| len).collect();
        assert_eq!(&lens[..7], &[16, 32, 64, 128, 256, 512, 1024]);
        assert!(lens[7..].iter().all(|&len| len == MAX_CHUNK));
        assert_eq!(
            lens.iter().sum::<usize>(),
            16 + 32 + 64 + 128 + 256 + 512 + 1024 * 9
        );
    }
}
