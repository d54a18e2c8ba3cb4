import { Readable } from "node:stream";
import tar from "tar-stream";

export interface TarFile {
  name: string;
  content?: Buffer;
  /** Directories have no content. */
  directory?: boolean;
  mode?: number;
}

/** A tar of the given files, owned by `uid`, as putArchive expects. */
export function packFiles(files: TarFile[], uid: number): Readable {
  const pack = tar.pack();
  for (const f of files) {
    if (f.directory) pack.entry({ name: f.name, type: "directory", mode: f.mode ?? 0o755, uid, gid: uid });
    else pack.entry({ name: f.name, mode: f.mode ?? 0o644, uid, gid: uid }, f.content ?? Buffer.alloc(0));
  }
  pack.finalize();
  return pack as unknown as Readable;
}

/**
 * Reads the first regular file of a tar stream, refusing more than `maxBytes`: what comes back from
 * a container was written by student code, so it gets no more trust or memory than it is due.
 */
export function readSingleFile(stream: NodeJS.ReadableStream, maxBytes: number): Promise<{ content: Buffer | null; tooLarge: boolean }> {
  return new Promise((resolve, reject) => {
    const extract = tar.extract();
    let settled = false;
    const finish = (value: { content: Buffer | null; tooLarge: boolean }) => {
      if (settled) return;
      settled = true;
      resolve(value);
      extract.destroy();
      (stream as Readable).destroy?.();
    };
    extract.on("entry", (header, entry, next) => {
      if (header.type !== "file") {
        entry.resume();
        entry.on("end", next);
        return;
      }
      if ((header.size ?? 0) > maxBytes) return finish({ content: null, tooLarge: true });
      const chunks: Buffer[] = [];
      let size = 0;
      entry.on("data", (data) => {
        const chunk = data as Buffer;
        size += chunk.length;
        if (size > maxBytes) finish({ content: null, tooLarge: true });
        else chunks.push(chunk);
      });
      entry.on("end", () => finish({ content: Buffer.concat(chunks), tooLarge: false }));
    });
    extract.on("finish", () => finish({ content: null, tooLarge: false }));
    extract.on("error", (err) => (settled ? undefined : reject(err)));
    stream.pipe(extract);
  });
}
