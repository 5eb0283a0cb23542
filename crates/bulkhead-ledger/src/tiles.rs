//! Stored interior hashes, in tiles, and the right edge that appends to them.
//!
//! Modelled on C2SP tlog-tiles: the tree is cut into tiles eight levels high. Tile
//! `(L, N)` covers tree levels `8L .. 8L+8` above the 256 level-`8L` nodes
//! `256N .. 256N+256`. Unlike tlog-tiles, which stores only a tile's bottom row and
//! recomputes the rows above it (up to 255 hashes per tile on a proof path), a tile
//! here stores every complete node of its eight rows: 510 hashes, 16,320 bytes when
//! full. A proof then is pure lookups — two or three tiles for a million entries —
//! at twice the storage of the bottom rows alone.
//!
//! Encoding: the rows bottom-up, each row's complete nodes left to right, 32 bytes
//! each. A tile of width `w` (complete bottom nodes) has `w >> j` nodes in row `j`,
//! so the width follows from the length. A full tile never changes again; the last
//! tile of each tile level grows in place.
//!
//! Appending touches only the last tile of each tile level (the right edge), so an
//! append is O(log n) and the whole tree is never recomputed.

use std::collections::BTreeSet;

use crate::proof::NodeId;
use crate::{Hash, node_hash};

/// Tree levels per tile.
pub const TILE_HEIGHT: u8 = 8;
/// Bottom-row nodes per full tile.
pub const TILE_WIDTH: usize = 1 << TILE_HEIGHT;
/// Bytes of a full tile.
pub const FULL_TILE_BYTES: usize = 32 * (2 * TILE_WIDTH - 2);

/// A tile's place: tile level `level` (tree levels `8·level ..`), index `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TileId {
    pub level: u8,
    pub index: u64,
}

impl TileId {
    /// The tile holding `node`, and the node's row and position inside it.
    pub fn locate(node: NodeId) -> (TileId, usize, usize) {
        let level = node.level / TILE_HEIGHT;
        let row = node.level % TILE_HEIGHT;
        let per_tile = TILE_HEIGHT - row;
        let id = TileId {
            level,
            index: node.index >> per_tile,
        };
        let pos = (node.index & ((1u64 << per_tile) - 1)) as usize;
        (id, usize::from(row), pos)
    }

    /// The last tile of each tile level in a tree of `size` leaves: what an appender
    /// needs to continue the tree.
    pub fn right_edge(size: u64) -> Vec<TileId> {
        let mut ids = Vec::new();
        let mut level = 0u8;
        loop {
            let count = size
                .checked_shr(u32::from(level) * u32::from(TILE_HEIGHT))
                .unwrap_or(0);
            if count == 0 {
                break;
            }
            ids.push(TileId {
                level,
                index: (count - 1) / TILE_WIDTH as u64,
            });
            level += 1;
        }
        ids
    }

    /// The width this tile has in a tree of `size` leaves (0 if it does not exist).
    pub fn width_at(&self, size: u64) -> usize {
        let count = size
            .checked_shr(u32::from(self.level) * u32::from(TILE_HEIGHT))
            .unwrap_or(0);
        let start = self.index * TILE_WIDTH as u64;
        count.saturating_sub(start).min(TILE_WIDTH as u64) as usize
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TileError {
    #[error("a tile of {0} bytes has no valid width")]
    BadLength(usize),
    #[error("tile {level}/{index} has width {got}, but a tree of this size needs {want}")]
    WrongWidth {
        level: u8,
        index: u64,
        got: usize,
        want: usize,
    },
    #[error("tile {level}/{index} is missing")]
    Missing { level: u8, index: u64 },
    #[error("tile {level}/{index} is internally inconsistent at row {row}")]
    Inconsistent { level: u8, index: u64, row: usize },
}

/// One tile's complete nodes, row by row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tile {
    pub id: TileId,
    rows: [Vec<Hash>; TILE_HEIGHT as usize],
}

fn encoded_len(width: usize) -> usize {
    (0..TILE_HEIGHT).map(|j| width >> j).sum::<usize>() * 32
}

impl Tile {
    pub fn new(id: TileId) -> Self {
        Self {
            id,
            rows: Default::default(),
        }
    }

    /// Complete nodes in the bottom row.
    pub fn width(&self) -> usize {
        self.rows[0].len()
    }

    pub fn is_full(&self) -> bool {
        self.width() == TILE_WIDTH
    }

    /// The node at `row`, position `pos`, if complete.
    pub fn get(&self, row: usize, pos: usize) -> Option<Hash> {
        self.rows.get(row)?.get(pos).copied()
    }

    /// The hash of `node` if this tile holds it.
    pub fn node(&self, node: NodeId) -> Option<Hash> {
        let (id, row, pos) = TileId::locate(node);
        if id != self.id {
            return None;
        }
        self.get(row, pos)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(encoded_len(self.width()));
        for row in &self.rows {
            for hash in row {
                out.extend_from_slice(hash);
            }
        }
        out
    }

    /// A tile rebuilt from its bottom row (at most 256 hashes, e.g. leaf hashes
    /// read back from the log's entries): the rows above are recomputed.
    pub fn from_bottom_row(id: TileId, bottom: &[Hash]) -> Result<Self, TileError> {
        if bottom.len() > TILE_WIDTH {
            return Err(TileError::BadLength(bottom.len() * 32));
        }
        let mut tile = Tile::new(id);
        for hash in bottom {
            tile.push(*hash);
        }
        Ok(tile)
    }

    /// Decodes a stored tile. Checks only the shape: whether the hashes are right is
    /// what proofs and checkpoints establish.
    pub fn decode(id: TileId, bytes: &[u8]) -> Result<Self, TileError> {
        let width = (1..=TILE_WIDTH)
            .find(|&w| encoded_len(w) == bytes.len())
            .ok_or(TileError::BadLength(bytes.len()))?;
        let mut tile = Tile::new(id);
        let mut chunks = bytes.chunks_exact(32);
        for (j, row) in tile.rows.iter_mut().enumerate() {
            for _ in 0..(width >> j) {
                let chunk = chunks.next().ok_or(TileError::BadLength(bytes.len()))?;
                row.push(chunk.try_into().expect("32-byte chunk"));
            }
        }
        Ok(tile)
    }

    /// Checks that every stored interior node is the hash of its two children in the
    /// row below. Cheap (at most 254 hashes) and run whenever a right-edge tile is
    /// loaded, so a tampered tile is refused before anything is built on it.
    pub fn check_rows(&self) -> Result<(), TileError> {
        for j in 1..usize::from(TILE_HEIGHT) {
            for (p, hash) in self.rows[j].iter().enumerate() {
                let below = &self.rows[j - 1];
                if node_hash(&below[2 * p], &below[2 * p + 1]) != *hash {
                    return Err(TileError::Inconsistent {
                        level: self.id.level,
                        index: self.id.index,
                        row: j,
                    });
                }
            }
        }
        Ok(())
    }

    /// Adds a bottom-row node and the interior nodes it completes. Returns the node
    /// of the next tile level if this completed the tile.
    fn push(&mut self, hash: Hash) -> Option<Hash> {
        debug_assert!(!self.is_full());
        self.rows[0].push(hash);
        for j in 1..usize::from(TILE_HEIGHT) {
            let below = &self.rows[j - 1];
            if below.len() % 2 == 1 || below.len() / 2 == self.rows[j].len() {
                break;
            }
            let parent = node_hash(&below[below.len() - 2], &below[below.len() - 1]);
            self.rows[j].push(parent);
        }
        let top = &self.rows[usize::from(TILE_HEIGHT) - 1];
        (self.is_full()).then(|| node_hash(&top[0], &top[1]))
    }
}

/// The right edge of a log: the last tile of every tile level. Appends leaves and
/// hands back the tiles they changed, for the store to write in the same
/// transaction as the entries.
#[derive(Debug, Clone, Default)]
pub struct RightEdge {
    size: u64,
    /// `tiles[L]` is the last tile of tile level L.
    tiles: Vec<Tile>,
    /// Tile levels whose last tile changed since `take_changed`.
    changed: BTreeSet<u8>,
    /// Tiles that filled up and were succeeded before `take_changed`.
    finished: Vec<Tile>,
}

impl RightEdge {
    pub fn empty() -> Self {
        Self::default()
    }

    /// Rebuilds the right edge of a tree of `size` leaves from its last tiles (as
    /// listed by `TileId::right_edge(size)`), checking each one's shape and rows.
    pub fn from_tiles(size: u64, mut tiles: Vec<Tile>) -> Result<Self, TileError> {
        let ids = TileId::right_edge(size);
        tiles.sort_by_key(|t| t.id);
        let mut edge = Vec::with_capacity(ids.len());
        for id in ids {
            let pos = tiles
                .iter()
                .position(|t| t.id == id)
                .ok_or(TileError::Missing {
                    level: id.level,
                    index: id.index,
                })?;
            let tile = tiles.swap_remove(pos);
            let want = id.width_at(size);
            if tile.width() != want {
                return Err(TileError::WrongWidth {
                    level: id.level,
                    index: id.index,
                    got: tile.width(),
                    want,
                });
            }
            tile.check_rows()?;
            edge.push(tile);
            tiles.sort_by_key(|t| t.id);
        }
        Ok(Self {
            size,
            tiles: edge,
            changed: BTreeSet::new(),
            finished: Vec::new(),
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf hash; returns its index.
    pub fn append(&mut self, leaf: Hash) -> u64 {
        let index = self.size;
        let mut carry = Some(leaf);
        let mut level = 0u8;
        while let Some(hash) = carry {
            let at = usize::from(level);
            if self.tiles.len() == at {
                self.tiles.push(Tile::new(TileId { level, index: 0 }));
            }
            if self.tiles[at].is_full() {
                let next = TileId {
                    level,
                    index: self.tiles[at].id.index + 1,
                };
                let done = std::mem::replace(&mut self.tiles[at], Tile::new(next));
                if self.changed.contains(&level) {
                    self.finished.push(done);
                }
            }
            carry = self.tiles[at].push(hash);
            self.changed.insert(level);
            level += 1;
        }
        self.size += 1;
        index
    }

    /// The tiles changed since the last call (completed ones and the current last
    /// tiles), to be written by the store.
    pub fn take_changed(&mut self) -> Vec<Tile> {
        let mut out = std::mem::take(&mut self.finished);
        for level in std::mem::take(&mut self.changed) {
            out.push(self.tiles[usize::from(level)].clone());
        }
        out
    }

    /// The hash of a node on the right edge, if one of the last tiles holds it.
    pub fn node(&self, node: NodeId) -> Option<Hash> {
        self.tiles
            .get(usize::from(node.level / TILE_HEIGHT))?
            .node(node)
    }

    /// The root of the tree as it stands.
    pub fn root(&self) -> Hash {
        crate::proof::root_from_nodes(self.size, |id| self.node(id))
            .expect("the right edge holds every node of the root's decomposition")
    }

    /// The last tiles, for caching by the owner.
    pub fn tiles(&self) -> &[Tile] {
        &self.tiles
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proof::{consistency_plan, inclusion_plan, verify_consistency, verify_inclusion};
    use crate::{leaf_hash, root_of};
    use std::collections::HashMap;

    fn leaf(i: u64) -> Hash {
        leaf_hash(&i.to_le_bytes())
    }

    /// Appends `n` leaves in batches, "storing" changed tiles in a map, reloading the
    /// right edge from the map after every batch as a restarted server would.
    fn build(n: u64, batch: u64) -> (HashMap<TileId, Tile>, Vec<Hash>) {
        let mut stored: HashMap<TileId, Tile> = HashMap::new();
        let mut edge = RightEdge::empty();
        let mut leaves = Vec::new();
        while edge.size() < n {
            for _ in 0..batch.min(n - edge.size()) {
                let h = leaf(edge.size());
                leaves.push(h);
                edge.append(h);
            }
            for tile in edge.take_changed() {
                stored.insert(tile.id, tile);
            }
            let size = edge.size();
            let tiles = TileId::right_edge(size)
                .into_iter()
                .map(|id| stored[&id].clone())
                .collect();
            edge = RightEdge::from_tiles(size, tiles).unwrap();
            assert_eq!(edge.root(), root_of(&leaves), "size {size}");
        }
        (stored, leaves)
    }

    fn lookup(stored: &HashMap<TileId, Tile>, id: NodeId) -> Option<Hash> {
        let (tile, _, _) = TileId::locate(id);
        stored.get(&tile)?.node(id)
    }

    #[test]
    fn tiles_round_trip_and_answer_proofs() {
        for (n, batch) in [(1, 1), (255, 7), (256, 256), (257, 1), (70_000, 999)] {
            let (stored, leaves) = build(n, batch);
            let root = root_of(&leaves);
            for tile in stored.values() {
                assert_eq!(&Tile::decode(tile.id, &tile.encode()).unwrap(), tile);
                tile.check_rows().unwrap();
            }
            for index in [0, n / 3, n / 2, n - 1] {
                let proof = inclusion_plan(index, n)
                    .unwrap()
                    .resolve(|id| lookup(&stored, id))
                    .unwrap();
                verify_inclusion(index, n, &leaves[index as usize], &proof, &root).unwrap();
            }
            for old in [1, n / 2, n - 1, n].into_iter().filter(|o| *o >= 1) {
                let proof = consistency_plan(old, n)
                    .unwrap()
                    .resolve(|id| lookup(&stored, id))
                    .unwrap();
                let old_root = root_of(&leaves[..old as usize]);
                verify_consistency(old, n, &proof, &old_root, &root).unwrap();
            }
        }
    }

    #[test]
    fn a_tile_rebuilt_from_its_bottom_row_equals_the_stored_one() {
        let (stored, leaves) = build(700, 700);
        let id = TileId { level: 0, index: 2 };
        let rebuilt = Tile::from_bottom_row(id, &leaves[512..700]).unwrap();
        assert_eq!(rebuilt, stored[&id]);
        let full = Tile::from_bottom_row(TileId { level: 0, index: 0 }, &leaves[..256]).unwrap();
        assert_eq!(full, stored[&TileId { level: 0, index: 0 }]);
        assert!(Tile::from_bottom_row(id, &leaves[..257]).is_err());
    }

    #[test]
    fn a_full_tile_is_16320_bytes_and_widths_follow_size() {
        let (stored, _) = build(256 * 256 + 3, 1000);
        let full = &stored[&TileId { level: 0, index: 0 }];
        assert_eq!(full.encode().len(), FULL_TILE_BYTES);
        assert_eq!(stored[&TileId { level: 1, index: 0 }].width(), 256);
        assert_eq!(stored[&TileId { level: 2, index: 0 }].width(), 1);
        assert_eq!(
            stored[&TileId {
                level: 0,
                index: 256
            }]
                .width(),
            3
        );
        assert_eq!(TileId::right_edge(256 * 256 + 3).len(), 3);
    }

    #[test]
    fn tampered_or_misshapen_tiles_are_refused() {
        let (stored, _) = build(300, 300);
        let id = TileId { level: 0, index: 0 };
        let mut bytes = stored[&id].encode();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let tile = Tile::decode(id, &bytes).unwrap();
        assert!(matches!(
            tile.check_rows(),
            Err(TileError::Inconsistent { .. })
        ));
        assert!(Tile::decode(id, &bytes[..100]).is_err());
        let edge = TileId::right_edge(300);
        let tiles: Vec<Tile> = edge.iter().map(|i| stored[i].clone()).collect();
        assert!(matches!(
            RightEdge::from_tiles(301, tiles),
            Err(TileError::WrongWidth { .. })
        ));
    }
}
