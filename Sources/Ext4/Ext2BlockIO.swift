import BlockIO
import CExt2fs
import Glibc
import Synchronization

/// A libext2fs I/O manager whose channels read and write a `BlockFile` (an obd layer
/// stack): libext2fs edits the ext4 inside an image without a kernel, a loop device
/// or a temporary raw file. A file is registered under a name, and `ext2fs_open2`
/// gets that name with this manager. Writes go to the file only for a file system
/// opened writable (Convert); Image only reads.
package enum Ext2BlockIO {
    /// The device behind one channel.
    final class Device: Sendable {
        let file: any BlockFile
        init(file: any BlockFile) { self.file = file }
    }

    private static let devices = Mutex<[String: Device]>([:])
    private static let counter = Atomic<Int>(0)

    /// Makes `file` reachable as a channel name; `unregister` when done.
    package static func register(_ file: any BlockFile) -> String {
        let name = "obd-block-\(counter.add(1, ordering: .relaxed).newValue)"
        devices.withLock { $0[name] = Device(file: file) }
        return name
    }

    package static func unregister(_ name: String) { devices.withLock { _ = $0.removeValue(forKey: name) } }

    private static func device(_ channel: io_channel?) -> Device? {
        guard let p = channel?.pointee.private_data else { return nil }
        return Unmanaged<Device>.fromOpaque(p).takeUnretainedValue()
    }

    private static func bytes(_ channel: io_channel, _ count: Int32) -> Int {
        count < 0 ? Int(-count) : Int(count) * Int(channel.pointee.block_size)
    }

    /// The manager (static storage: libext2fs keeps pointers to it).
    nonisolated(unsafe) package static let manager: io_manager = {
        let m = UnsafeMutablePointer<struct_io_manager>.allocate(capacity: 1)
        memset(m, 0, MemoryLayout<struct_io_manager>.size)
        m.pointee.magic = errcode_t(EXT2_ET_MAGIC_IO_MANAGER)
        m.pointee.name = UnsafePointer(strdup("obd block file"))
        m.pointee.open = { name, _, channelOut in
            guard let name, let channelOut else { return errcode_t(EINVAL) }
            guard let dev = Ext2BlockIO.devices.withLock({ $0[String(cString: name)] }) else { return errcode_t(ENOENT) }
            let raw = calloc(1, MemoryLayout<struct_io_channel>.size)!
            let ch = raw.bindMemory(to: struct_io_channel.self, capacity: 1)
            ch.pointee.magic = errcode_t(EXT2_ET_MAGIC_IO_CHANNEL)
            ch.pointee.manager = Ext2BlockIO.manager
            ch.pointee.name = strdup(name)
            ch.pointee.block_size = 1024
            ch.pointee.refcount = 1
            ch.pointee.private_data = UnsafeMutableRawPointer(Unmanaged.passRetained(dev).toOpaque())
            channelOut.pointee = ch
            return 0
        }
        m.pointee.close = { channel in
            guard let channel else { return 0 }
            channel.pointee.refcount -= 1
            if channel.pointee.refcount > 0 { return 0 }
            if let p = channel.pointee.private_data { Unmanaged<Device>.fromOpaque(p).release() }
            free(channel.pointee.name)
            free(channel)
            return 0
        }
        m.pointee.set_blksize = { channel, size in
            channel?.pointee.block_size = size
            return 0
        }
        m.pointee.read_blk64 = { channel, block, count, data in
            guard let channel, let data, let dev = Ext2BlockIO.device(channel) else { return errcode_t(EINVAL) }
            let n = Ext2BlockIO.bytes(channel, count)
            let offset = UInt64(block) * UInt64(channel.pointee.block_size)
            do {
                let got = try dev.file.read(into: UnsafeMutableRawBufferPointer(start: data, count: n), at: offset)
                // Beyond the end of the disk reads as zeros (libext2fs never asks for it).
                if got < n { memset(data + got, 0, n - got) }
                return 0
            } catch {
                return errcode_t(EIO)
            }
        }
        m.pointee.write_blk64 = { channel, block, count, data in
            guard let channel, let data, let dev = Ext2BlockIO.device(channel) else { return errcode_t(EINVAL) }
            let n = Ext2BlockIO.bytes(channel, count)
            let offset = UInt64(block) * UInt64(channel.pointee.block_size)
            do {
                try dev.file.write(UnsafeRawBufferPointer(start: data, count: n), at: offset)
                return 0
            } catch {
                return errcode_t(EIO)
            }
        }
        m.pointee.read_blk = { channel, block, count, data in
            Ext2BlockIO.manager.pointee.read_blk64!(channel, UInt64(block), count, data)
        }
        m.pointee.write_blk = { channel, block, count, data in
            Ext2BlockIO.manager.pointee.write_blk64!(channel, UInt64(block), count, data)
        }
        m.pointee.flush = { channel in
            guard let dev = Ext2BlockIO.device(channel) else { return errcode_t(EINVAL) }
            do { try dev.file.flush(); return 0 } catch { return errcode_t(EIO) }
        }
        m.pointee.discard = { channel, block, count in
            guard let channel, let dev = Ext2BlockIO.device(channel) else { return errcode_t(EINVAL) }
            let bs = UInt64(channel.pointee.block_size)
            do { try dev.file.discard(offset: block * bs, length: count * bs); return 0 } catch { return errcode_t(EXT2_ET_UNIMPLEMENTED) }
        }
        m.pointee.zeroout = { channel, block, count in
            guard let channel, let dev = Ext2BlockIO.device(channel) else { return errcode_t(EINVAL) }
            let bs = UInt64(channel.pointee.block_size)
            do { try dev.file.writeZeroes(offset: block * bs, length: count * bs); return 0 } catch { return errcode_t(EXT2_ET_UNIMPLEMENTED) }
        }
        return m
    }()
}
