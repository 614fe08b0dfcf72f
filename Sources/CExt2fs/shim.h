// libext2fs (e2fsprogs): ext4 read and written in userspace by obd convert/apply/mkfs.
#include <ext2fs/ext2_fs.h>
#include <ext2fs/ext2fs.h>
#include <string.h>

// Accessors for what Swift cannot reach directly (unions, macros).
static inline __u32 obd_ext2_inode_block(const struct ext2_inode *i, int n) { return i->i_block[n]; }
static inline void obd_ext2_inode_set_block(struct ext2_inode *i, int n, __u32 v) { i->i_block[n] = v; }
static inline __u32 obd_ext2_first_ino(ext2_filsys fs) { return EXT2_FIRST_INO(fs->super); }
static inline int obd_ext2_blocksize(ext2_filsys fs) { return fs->blocksize; }
