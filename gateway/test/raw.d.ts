// Vite serves a file as a string with the ?raw suffix (used for spec fixtures).
declare module "*?raw" {
  const text: string;
  export default text;
}
